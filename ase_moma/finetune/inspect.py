"""What a tuned potential moved, read after the fact: ``ase-moma inspect TUNED/ [OTHER/]``.

A tuned folder (``finetune -o OUT``) or a potential module folder (a hub's
``delta`` module) holds the change from its base weights as indices + values.
:func:`inspect_moved` counts it per layer, per irrep degree l and per element
(:func:`~ase_moma.finetune.report.sparsity_report`) and names the paths that
moved most; :func:`compare_moved` measures how much two changes of the same
base overlap, beside the overlap two random choices of the same sizes would
have.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ase_moma.delta import Delta, read_delta
from ase_moma.finetune.report import sparsity_report
from ase_moma.module_files import DELTA, MODULE_JSON, check_module_folder, load_tensors
from ase_moma.provenance import load_recorded_backbone

TUNED_RECORD = "finetune.json"


@dataclass
class MovedEntries:
    """A change from base weights: the delta, the base's record, and where it was read from."""

    delta: Delta
    base: dict[str, Any]
    source: Path


def read_moved(folder: str | Path) -> MovedEntries:
    """The change a tuned folder or a potential module folder holds (files verified)."""
    from ase_moma.finetune.tuned_folder import MODULE

    folder = Path(folder)
    module = folder / MODULE if (folder / TUNED_RECORD).is_file() else folder
    if not (module / MODULE_JSON).is_file():
        raise FileNotFoundError(f"{folder} is neither a tuned potential (finetune.json) nor a potential module "
                                "(module.json of kind delta)")
    meta = check_module_folder(module)
    if meta.get("kind") != "delta":
        raise ValueError(f"{module} is a {meta.get('kind')} module, not a potential module (kind delta)")
    return MovedEntries(read_delta(load_tensors(module / DELTA), module / DELTA), meta["backbone"], folder)


def inspect_moved(folder: str | Path, top: int = 10) -> dict[str, Any]:
    """The sparsity report of ``folder``'s change (:func:`sparsity_report`) with ``largest``: the ``top``
    paths (one e3nn path's block of a weight, or a whole weight) by the norm of their change."""
    moved = read_moved(folder)
    backbone = load_recorded_backbone(moved.base, f"the change in {folder}", device="cpu")
    shapes = {name: tensor.shape for name, tensor in backbone.model.state_dict().items()}
    weights = backbone.path_weights()
    report = sparsity_report(weights, shapes, moved.delta)
    paths = []
    for weight in weights:
        if weight.name not in moved.delta:
            continue
        size = shapes[weight.name].numel()
        change = torch.zeros(size, dtype=torch.float64)
        indices, values = moved.delta[weight.name]
        change[indices] = values.double()
        blocks = [(start, stop) for start, stop, *_ in weight.blocks] or [(0, size)]
        for number, (start, stop) in enumerate(blocks):
            part = change[start:stop]
            paths.append({"weight": weight.name, "layer": weight.layer, "kind": weight.kind,
                          "path": number if len(blocks) > 1 else None, "l": _degree(weight, start),
                          "moved": int((part != 0).sum()), "size": stop - start, "norm": float(part.norm())})
    report["largest"] = sorted(paths, key=lambda p: -p["norm"])[:top]
    report["source"] = str(folder)
    return report


def compare_moved(first: str | Path, second: str | Path) -> dict[str, Any]:
    """How the entries two changes of one base moved overlap: ``shared`` entries, ``jaccard`` (shared over
    either), ``by_chance`` (the shared count two random choices of the same sizes per tensor would give),
    and ``per_tensor`` shared counts."""
    a, b = read_moved(first), read_moved(second)
    if a.base.get("fingerprint") != b.base.get("fingerprint"):
        raise ValueError(f"{first} and {second} changed different base weights (fingerprints "
                         f"{str(a.base.get('fingerprint'))[:16]}… and {str(b.base.get('fingerprint'))[:16]}…)")
    backbone = load_recorded_backbone(a.base, f"the change in {first}", device="cpu")
    sizes = {name: tensor.numel() for name, tensor in backbone.model.state_dict().items()}
    per_tensor, chance = {}, 0.0
    for name in sorted(set(a.delta) & set(b.delta)):
        shared = len(set(a.delta[name][0].tolist()) & set(b.delta[name][0].tolist()))
        per_tensor[name] = shared
        chance += len(a.delta[name][0]) * len(b.delta[name][0]) / sizes[name]
    counts = [sum(len(indices) for indices, _ in d.delta.values()) for d in (a, b)]
    shared = sum(per_tensor.values())
    return {"moved": counts, "shared": shared, "jaccard": shared / max(1, counts[0] + counts[1] - shared),
            "by_chance": chance, "per_tensor": per_tensor}


def _degree(weight: Any, start: int) -> int | None:
    """The irrep degree l of the block of ``weight`` starting at ``start`` (None when not resolved)."""
    for l, spans in weight.irrep_slices.items():
        if any(begin <= start < end for begin, end in spans):
            return l
    return None
