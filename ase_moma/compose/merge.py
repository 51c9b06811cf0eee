"""Weight-space merging of modules: θ = Σ_j w_j θ_j in one streaming pass over safetensors files.

Tensors are read one name at a time from every file (``safe_open`` maps the
files; nothing is loaded whole), so peak memory is the merged result plus one
tensor per file, about two modules whatever the number of modules. Adapter
modules merge the same way: their files hold the adapters layer by layer, and
each module's single scalar weight applies to all its layers. A ``delta``
module (a fine-tuned potential stored as its change from the pretrained
weights) takes part as pretrained + delta, given the pretrained ``base`` state.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from ase_moma.delta import INDICES, add_at, read_delta

MIN_WEIGHT = 1e-6


def merge_safetensors(paths: Sequence[str | Path], weights: Sequence[float],
                      base: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Σ_j w_j · tensors_j, name by name, for files with identical names and shapes.

    Modules with weight below 1e-6 are skipped; the remaining weights are used
    as given (they sum to one when they come from the simplex solver). Floating
    tensors are accumulated in float64 and returned in their stored dtype;
    integer tensors (counters, indices) must agree across files and are kept.
    base: the pretrained state, needed when a file is a delta.
    Raises ValueError naming the file and tensor that does not line up.
    """
    if len(paths) != len(weights) or not paths:
        raise ValueError(f"need one weight per module file, got {len(paths)} files and {len(weights)} weights")
    kept = [(Path(p), float(w)) for p, w in zip(paths, weights) if w >= MIN_WEIGHT]
    if not kept:
        raise ValueError(f"every weight is below {MIN_WEIGHT}: nothing to merge")
    handles = [_open(path, base) for path, _ in kept]
    names = sorted(handles[0].keys())
    for (path, _), handle in zip(kept[1:], handles[1:]):
        if sorted(handle.keys()) != names:
            raise ValueError(f"{path} holds other tensors than {kept[0][0]}: modules of one "
                             "backbone and one kind are needed to merge")
    merged: dict[str, torch.Tensor] = {}
    for name in names:
        first = handles[0].get_tensor(name)
        if not first.is_floating_point():
            for (path, _), handle in zip(kept[1:], handles[1:]):
                if not torch.equal(handle.get_tensor(name), first):
                    raise ValueError(f"integer tensor {name} differs between {kept[0][0]} and {path}")
            merged[name] = first
            continue
        total = first.to(torch.float64) * kept[0][1]
        for (path, weight), handle in zip(kept[1:], handles[1:]):
            tensor = handle.get_tensor(name)
            if tensor.shape != first.shape:
                raise ValueError(f"tensor {name} has shape {tuple(tensor.shape)} in {path} but "
                                 f"{tuple(first.shape)} in {kept[0][0]}")
            total += tensor.to(torch.float64) * weight
            del tensor  # hold one tensor per file at a time
        merged[name] = total.to(first.dtype)
    return merged


class _DeltaFile:
    """A delta file read as the whole state it stands for: base + delta, one tensor at a time."""

    def __init__(self, path: Path, handle: Any, base: Mapping[str, torch.Tensor]) -> None:
        self.base = base
        self.delta = read_delta({name: handle.get_tensor(name) for name in handle.keys()}, path)

    def keys(self) -> list[str]:
        return list(self.base)

    def get_tensor(self, name: str) -> torch.Tensor:
        tensor = self.base[name].clone()
        if name in self.delta:
            add_at(tensor.view(-1), *self.delta[name])
        return tensor


def _open(path: Path, base: Mapping[str, torch.Tensor] | None) -> Any:
    """A safetensors handle, or for a delta file a view of base + delta."""
    from safetensors import safe_open

    handle = safe_open(str(path), framework="pt")
    if not any(name.endswith(INDICES) for name in handle.keys()):
        return handle
    if base is None:
        raise ValueError(f"{path} is a delta module: merging it needs the pretrained weights")
    return _DeltaFile(path, handle, base)
