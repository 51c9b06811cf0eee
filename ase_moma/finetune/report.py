"""Which path weights moved: the fraction updated per layer, per irrep degree l, per element, and in all.

Counts come from the exported delta, so they describe the model as saved.
For e3nn linears the flat weight is split by the irrep blocks of its paths
(``PathWeight.irrep_slices``); other path weights count under ``l = None``
(``"other"`` in the JSON). Weights with one block per element (a species
embedding, ``PathWeight.element_slices``) are also counted per element. No
backbone here has element-pair-resolved path weights (their radial MLPs
take distances only), so there is no per-pair count.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

import torch
from ase.data import chemical_symbols

from ase_moma.backbone import PathWeight
from ase_moma.delta import Delta


def sparsity_report(path_weights: Sequence[PathWeight], shapes: dict[str, torch.Size], delta: Delta
                    ) -> dict[str, Any]:
    """``{"total", "per_layer", "per_l", "per_element", "tensors", "other_changed"}``: updated/size/fraction.

    shapes: each path weight's shape. other_changed: tensors outside the path
    weights that the delta changes (e.g. refitted reference energies), with counts.
    """
    per_layer: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    per_l: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    per_element: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    tensors = {}
    for weight in path_weights:
        size = int(torch.Size(shapes[weight.name]).numel())
        changed = torch.zeros(size, dtype=torch.bool)
        if weight.name in delta:
            changed[delta[weight.name][0]] = True
        updated = int(changed.sum())
        tensors[weight.name] = _row(updated, size, layer=weight.layer, kind=weight.kind)
        per_layer[weight.layer][0] += updated
        per_layer[weight.layer][1] += size
        spans = [(l, span) for l, parts in weight.irrep_slices.items() for span in parts] or [(None, (0, size))]
        for l, (start, stop) in spans:
            key = "other" if l is None else str(l)
            per_l[key][0] += int(changed[start:stop].sum())
            per_l[key][1] += stop - start
        for z, (start, stop) in weight.element_slices.items():
            per_element[chemical_symbols[z]][0] += int(changed[start:stop].sum())
            per_element[chemical_symbols[z]][1] += stop - start
    total = [sum(v[0] for v in per_layer.values()), sum(v[1] for v in per_layer.values())]
    names = {w.name for w in path_weights}
    return {
        "total": _row(*total),
        "per_layer": {layer: _row(*counts) for layer, counts in per_layer.items()},
        "per_l": {key: _row(*per_l[key]) for key in sorted(per_l, key=lambda k: (k == "other", k))},
        "per_element": {symbol: _row(*counts) for symbol, counts in per_element.items()},
        "tensors": tensors,
        "other_changed": {name: int(indices.numel()) for name, (indices, _) in delta.items() if name not in names},
    }


def sparsity_chart(report: dict[str, Any], title: str, path: str | Path) -> None:
    """Write a PNG: percent of path weights updated per layer, per irrep degree l, and per element
    (the elements whose embedding moved most, where the backbone has one)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    layers = list(report["per_layer"])
    elements = sorted(report.get("per_element", {}), key=lambda k: -report["per_element"][k]["fraction"])[:8]
    panels = 3 if elements else 2
    figure = Figure(figsize=(max(6.0, 0.35 * len(layers) + 4 + 2 * (panels - 2)), 3.8), layout="constrained")
    axes = figure.subplots(1, panels, width_ratios=[max(3, len(layers)), 3, 3][:panels])
    by_layer, by_l = axes[0], axes[1]
    by_layer.bar(range(len(layers)), [100 * report["per_layer"][k]["fraction"] for k in layers], color="tab:blue")
    by_layer.set_xticks(range(len(layers)), layers, rotation=60, ha="right", fontsize=7)
    by_layer.set_ylabel("path weights updated (%)")
    by_layer.set_title(f"{title}: {100 * report['total']['fraction']:.2f} % of "
                       f"{report['total']['size']} updated", fontsize=9)
    degrees = list(report["per_l"])
    by_l.bar(range(len(degrees)), [100 * report["per_l"][k]["fraction"] for k in degrees], color="tab:orange")
    by_l.set_xticks(range(len(degrees)), [k if k == "other" else f"l={k}" for k in degrees], fontsize=8)
    by_l.set_title("by irrep degree", fontsize=9)
    if elements:
        axes[2].bar(range(len(elements)), [100 * report["per_element"][k]["fraction"] for k in elements],
                    color="tab:green")
        axes[2].set_xticks(range(len(elements)), elements, fontsize=8)
        axes[2].set_title("species embedding, by element", fontsize=9)
    figure.savefig(path, format="png", dpi=120)


def _row(updated: int, size: int, **extra: Any) -> dict[str, Any]:
    return {**extra, "updated": updated, "size": size, "fraction": updated / size if size else 0.0}
