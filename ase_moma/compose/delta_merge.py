"""Merging potential modules: their changes from the pretrained weights, added with weights.

A potential module is a delta δ_j over the pretrained state θ₀. With the
pretrained potential itself as a candidate of weight w₀ (its delta is zero)
and weights w₀ + Σ_j w_j = 1, two merges are offered:

``sum``             θ = θ₀ + Σ_j w_j δ_j — the weight-space average of the
                    candidates θ₀ + δ_j (task arithmetic at its convex point).
``sign_consensus``  TIES-merging's elect-and-disjoint-mean for sparse deltas:
                    per entry, the sign of Σ_j w_j δ_j is elected; the modules
                    whose change there has that sign are averaged with their
                    weights; the result is scaled by the modules' total weight
                    Σ_j w_j = 1 − w₀. A change only one module makes keeps its
                    full size (times 1 − w₀), so modules that move different
                    entries do not dilute each other; opposing changes do not
                    cancel into a value neither module chose (an exact tie of
                    weighted changes elects no sign, and the entry stays put).

Both read one tensor name at a time from every delta, so memory is about one
dense tensor per module of the largest tensor changed.
"""

from __future__ import annotations

from typing import Sequence

import torch

from ase_moma.delta import Delta

MERGES = ("sum", "sign_consensus")


def merge_deltas(deltas: Sequence[Delta], weights: Sequence[float], shapes: dict[str, torch.Size],
                 method: str = "sum") -> Delta:
    """The merged delta of ``deltas`` (modules) with ``weights`` (theirs; the pretrained candidate's
    weight is what they leave of 1).

    shapes: the state's tensor shapes by name (a delta stores flat indices). Values are accumulated in
    float64 and returned in each delta's dtype; entries the merge leaves at zero are dropped.
    """
    if method not in MERGES:
        raise ValueError(f"unknown merge {method!r}; choose one of {', '.join(MERGES)}")
    if len(deltas) != len(weights):
        raise ValueError(f"need one weight per delta, got {len(deltas)} deltas and {len(weights)} weights")
    if any(not w >= 0 for w in weights) or sum(weights) > 1 + 1e-9:
        raise ValueError(f"module weights must be non-negative and sum to at most 1, got {list(weights)}")
    names = sorted({name for delta in deltas for name in delta})
    unknown = [name for name in names if name not in shapes]
    if unknown:
        raise ValueError(f"the deltas change tensors the model does not have: {unknown[:3]}")
    mass = float(sum(weights))
    merged: Delta = {}
    for name in names:
        size = shapes[name].numel()
        dtype = next(delta[name][1].dtype for delta in deltas if name in delta)
        dense = torch.zeros(len(deltas), size, dtype=torch.float64)
        for row, delta in enumerate(deltas):
            if name in delta:
                indices, values = delta[name]
                dense[row].index_add_(0, indices, values.to(torch.float64))
        scaled = dense * torch.as_tensor(weights, dtype=torch.float64)[:, None]
        if method == "sum":
            change = scaled.sum(0)
        else:
            elected = torch.sign(scaled.sum(0))
            agree = (torch.sign(dense) == elected) & (dense != 0)
            agreeing_weight = (agree * torch.as_tensor(weights, dtype=torch.float64)[:, None]).sum(0)
            change = torch.where(agreeing_weight > 0, (scaled * agree).sum(0) / agreeing_weight.clamp_min(1e-300),
                                 torch.zeros(()))
            change = mass * change
        indices = torch.nonzero(change, as_tuple=True)[0]
        if indices.numel():
            merged[name] = (indices, change[indices].to(dtype))
    return merged
