"""Helpers for backbones built on e3nn: importing it, and slicing its weights by irrep.

e3nn 0.4.4 (pinned by mace-torch) reads a constants file with ``torch.load`` at
import time; under torch ≥ 2.6 that needs ``slice`` on the weights-only allow
list. Allowing ``slice`` lets no code run, unlike mace's own workaround
(turning weights-only loading off for the whole process).

e3nn compiles each generated layer with TorchScript by default, which prints
thousands of warnings while a model is built and, on this CPU, doubles its load
time for the same numbers; plugins build their models under
:func:`without_torchscript`.
"""

from __future__ import annotations

from collections import defaultdict
from contextlib import contextmanager
from math import prod
from typing import Iterator

import torch

from ase_moma.backbone import PathWeight


def prepare_e3nn() -> None:
    """Make ``import e3nn`` work under torch ≥ 2.6; call before importing e3nn users."""
    torch.serialization.add_safe_globals([slice])


@contextmanager
def without_torchscript() -> Iterator[None]:
    """Build e3nn modules in the block as plain torch.fx code rather than TorchScript; e3nn's
    process-wide optimisation defaults are put back afterwards."""
    prepare_e3nn()
    import e3nn

    saved = e3nn.get_optimization_defaults()
    e3nn.set_optimization_defaults(jit_script_fx=False)
    try:
        yield
    finally:
        e3nn.set_optimization_defaults(**saved)


def e3nn_path_weight(name: str, module: torch.nn.Module, layer: str) -> PathWeight | None:
    """The tagged ``weight`` of an e3nn ``o3.Linear``/``o3.TensorProduct`` that has one, else None."""
    from e3nn import o3

    if not isinstance(module, (o3.Linear, o3.TensorProduct)) or module.weight.numel() == 0:
        return None
    kind = "linear" if isinstance(module, o3.Linear) else "tensor_product"
    return PathWeight(f"{name}.weight", layer, kind, irrep_slices(module), path_blocks(module))


def path_blocks(module: torch.nn.Module) -> tuple[tuple[int, int, int, int], ...]:
    """``(start, stop, rows, cols)`` of each weighted path in an e3nn module's flat ``weight``.

    A path's weights form an array of ``path_shape``; rows are all its axes but
    the last (the output multiplicity), cols the last.
    """
    blocks, offset = [], 0
    for ins in module.instructions:
        if hasattr(ins, "has_weight") and not ins.has_weight:
            continue
        size = prod(ins.path_shape)
        cols = ins.path_shape[-1]
        blocks.append((offset, offset + size, size // cols, cols))
        offset += size
    return tuple(blocks)


def irrep_slices(module: torch.nn.Module) -> dict[int, tuple[tuple[int, int], ...]]:
    """``l -> ((start, stop), ...)``: slices of an e3nn module's flat ``weight`` by path degree.

    For ``o3.Linear`` a path maps input irreps of degree l to output irreps of
    the same l; for tensor products the degree is that of the output irrep.
    Raises ValueError if the slices do not tile the weight exactly.
    """
    slices: dict[int, list[tuple[int, int]]] = defaultdict(list)
    offset = 0
    for ins in module.instructions:
        if hasattr(ins, "has_weight") and not ins.has_weight:
            continue
        size = prod(ins.path_shape)
        degree = module.irreps_out[ins.i_out].ir.l
        slices[degree].append((offset, offset + size))
        offset += size
    if offset != module.weight.numel():
        raise ValueError(
            f"irrep slices cover {offset} of {module.weight.numel()} weights of {type(module).__name__}"
        )
    return {degree: tuple(parts) for degree, parts in sorted(slices.items())}
