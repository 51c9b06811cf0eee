"""A model's change from its pretrained weights, stored sparsely: indices + values per tensor.

In safetensors, tensor ``NAME`` of the state dict contributes ``NAME:indices``
(int64, positions in the flattened tensor) and ``NAME:values`` (the increments
there, in the tensor's dtype). Applying a delta adds the values in place, so
base + delta is the tuned model exactly as :func:`apply_delta` builds it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch

from ase_moma.module_files import HubIntegrityError

Delta = dict[str, tuple[torch.Tensor, torch.Tensor]]
INDICES, VALUES = ":indices", ":values"


@torch.no_grad()
def state_delta(base: Mapping[str, torch.Tensor], tuned: Mapping[str, torch.Tensor]) -> Delta:
    """``{name: (indices, values)}`` of every floating entry where ``tuned`` differs from ``base``."""
    if base.keys() != tuned.keys():
        raise ValueError("the tuned model has other tensors than the base model")
    delta: Delta = {}
    for name, before in base.items():
        after = tuned[name]
        if not before.is_floating_point() or torch.equal(before, after):
            continue
        change = (after.to(before.dtype) - before).reshape(-1)
        indices = torch.nonzero(change, as_tuple=True)[0]
        delta[name] = (indices.cpu(), change[indices].cpu())
    return delta


@torch.no_grad()
def apply_delta(model: torch.nn.Module, delta: Delta, source: str | Path = "delta") -> None:
    """Add ``delta`` to ``model``'s state in place (parameters and buffers); errors name ``source``."""
    state = model.state_dict(keep_vars=True)
    for name, (indices, values) in delta.items():
        if name not in state:
            raise HubIntegrityError(f"{source}: tensor {name} is not in the model")
        flat = state[name].data.view(-1)
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= flat.numel()):
            raise HubIntegrityError(f"{source}: indices of {name} fall outside its {flat.numel()} entries")
        add_at(flat, indices, values)


def add_at(flat: torch.Tensor, indices: torch.Tensor, values: torch.Tensor) -> None:
    """``flat[indices] += values`` in ``flat``'s dtype and device: the one way a delta is applied."""
    indices = indices.to(flat.device)
    flat[indices] = flat[indices] + values.to(device=flat.device, dtype=flat.dtype)


def delta_tensors(delta: Delta) -> dict[str, torch.Tensor]:
    """The flat safetensors content of ``delta``."""
    tensors = {}
    for name, (indices, values) in delta.items():
        tensors[name + INDICES] = indices.to(torch.int64)
        tensors[name + VALUES] = values
    return tensors


def read_delta(tensors: Mapping[str, torch.Tensor], source: str | Path = "delta") -> Delta:
    """Inverse of :func:`delta_tensors`; HubIntegrityError naming ``source`` for a malformed file."""
    names = {key[: -len(INDICES)] for key in tensors if key.endswith(INDICES)}
    expected = {name + suffix for name in names for suffix in (INDICES, VALUES)}
    if set(tensors) != expected:
        stray = sorted(set(tensors) ^ expected)
        raise HubIntegrityError(f"{source} is not a delta file: unpaired or unknown tensors {stray[:3]}")
    delta: Delta = {}
    for name in sorted(names):
        indices, values = tensors[name + INDICES], tensors[name + VALUES]
        if indices.dtype != torch.int64 or indices.ndim != 1 or values.shape != indices.shape:
            raise HubIntegrityError(f"{source}: {name} needs int64 indices and values of one length")
        delta[name] = (indices, values)
    return delta


def changed_entries(delta: Delta) -> int:
    """How many entries the delta changes."""
    return sum(int(indices.numel()) for indices, _ in delta.values())
