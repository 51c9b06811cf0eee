"""Structures with one per-structure target each, read from extended XYZ, and their splits (as
:class:`~ase_moma.labelled_set.LabelledSet`)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from ase import Atoms

from ase_moma.checkpoints import require_file
from ase_moma.labelled_set import LabelledSet
from ase_moma.structures import read_structures


def read_labelled(path: str | Path, key: str, indices: Sequence[int] | None = None) -> LabelledSet:
    """Read ``path`` (any format ase.io reads) and the target ``atoms.info[key]`` of each frame.

    ``energy`` (eV) and ``energy_per_atom`` (eV/atom) are also read from a
    frame's stored DFT energy (extended XYZ's ``energy=``, which ASE keeps on the
    frame's calculator rather than in ``info``) when ``info`` has no such key.

    indices: keep only these frame positions (e.g. one split). Raises ValueError
    naming the frame for a missing or non-finite target, and for an empty file.
    """
    frames = read_structures(path, "data file")
    if indices is None:
        indices = range(len(frames))
    indices = [int(i) for i in indices]
    bad = [i for i in indices if not 0 <= i < len(frames)]
    if bad:
        raise ValueError(f"{path} has {len(frames)} frames; split indices out of range: {bad[:5]}")
    targets = np.empty(len(indices))
    for row, index in enumerate(indices):
        info = _with_stored_energy(frames[index])
        if key not in info:
            known = ", ".join(sorted(k for k in info if isinstance(info[k], (int, float)))) or "none"
            raise ValueError(f"{path}: frame {index} has no target {key!r} in atoms.info "
                             f"(numeric keys there: {known})")
        try:
            value = float(info[key])
        except (TypeError, ValueError):
            raise ValueError(f"{path}: frame {index} target {key!r} is not a number: {info[key]!r}") from None
        if not math.isfinite(value):
            raise ValueError(f"{path}: frame {index} target {key!r} is {value}, not a finite number")
        targets[row] = value
    return LabelledSet([frames[i] for i in indices], str(path), indices, targets=targets, key=key)


def _with_stored_energy(atoms: Atoms) -> dict[str, Any]:
    """``atoms.info`` plus ``energy`` and ``energy_per_atom`` from a stored energy where info lacks them."""
    results = getattr(atoms.calc, "results", {}) or {}
    if "energy" not in results:
        return atoms.info
    energy = float(results["energy"])
    return {"energy": energy, "energy_per_atom": energy / len(atoms), **atoms.info}


def read_split(path: str | Path, task: str) -> dict[str, list[int]]:
    """``{"train": [...], "val": [...], "test": [...]}`` frame indices for ``task``.

    The file maps task names to splits (as ``matminer/splits/seed0.json``); a
    file holding one split directly (keys train/val[/test]) is accepted too.
    """
    path = require_file(path, "split file")
    with open(path) as handle:
        content = json.load(handle)
    split = content if "train" in content else content.get(task)
    if split is None:
        raise ValueError(f"{path} has no split for task {task!r}; tasks there: {', '.join(sorted(content))}")
    missing = {"train", "val"} - split.keys()
    if missing:
        raise ValueError(f"{path}: the split for {task!r} lacks {', '.join(sorted(missing))}")
    return {part: [int(i) for i in split[part]] for part in ("train", "val", "test") if part in split}


def random_split(n: int, val_fraction: float, seed: int) -> dict[str, list[int]]:
    """A seeded train/val split of ``n`` items (at least one in each part)."""
    if n < 2:
        raise ValueError(f"need at least 2 labelled structures to hold one out for validation, got {n}")
    order = np.random.default_rng(seed).permutation(n)
    n_val = min(n - 1, max(1, round(val_fraction * n)))
    return {"train": sorted(order[n_val:].tolist()), "val": sorted(order[:n_val].tolist())}


@dataclass
class TaskData:
    """The labelled splits of one task (``test`` may be None); split_source says where they came from."""

    train: LabelledSet
    val: LabelledSet
    test: LabelledSet | None
    split_source: str

    def parts(self) -> dict[str, LabelledSet]:
        """``{"train", "val"[, "test"]}`` → the non-empty splits."""
        return {name: subset for name, subset in (("train", self.train), ("val", self.val),
                                                   ("test", self.test)) if subset}

    def graphs(self, backbone: Any) -> dict[str, tuple[list[Any], LabelledSet]]:
        """``{split: (graphs, labelled set)}`` for every non-empty split."""
        return {name: (build_graphs(backbone, subset), subset) for name, subset in self.parts().items()}


def load_task_data(data: str | Path, target: str, split: str | Path | None = None, task: str | None = None,
                   *, val_fraction: float = 0.1, seed: int = 0, max_train: int | None = None) -> TaskData:
    """Read the frames and split them: by a split file when given, else at random (seeded).

    task: the split file's key (default: the data file's stem). max_train:
    subsample the training split to at most this many structures (seeded).
    """
    if split is not None:
        parts = read_split(split, task or Path(data).stem)
        wanted = sorted(set().union(*parts.values()))
        labelled = read_labelled(data, target, wanted)
        where = {index: row for row, index in enumerate(labelled.indices)}
        sets = {part: labelled.subset([where[i] for i in indices]) for part, indices in parts.items()}
        split_source = str(split)
    else:
        labelled = read_labelled(data, target)
        parts = random_split(len(labelled), val_fraction, seed)
        sets = {part: labelled.subset(rows) for part, rows in parts.items()}
        split_source = f"random (val_fraction={val_fraction}, seed={seed})"
    train = sets["train"]
    if max_train is not None and len(train) > max_train:
        keep = np.random.default_rng(seed).choice(len(train), max_train, replace=False)
        train = train.subset(sorted(keep.tolist()))
    for part, subset in (("train", train), ("val", sets["val"])):
        if len(subset) == 0:
            raise ValueError(f"the {part} split of {data} is empty")
    return TaskData(train, sets["val"], sets.get("test"), split_source)


def build_graphs(backbone: Any, labelled: LabelledSet) -> list[Any]:
    """``backbone.graph`` of every frame; an error names the frame's index in its file."""
    graphs = []
    for atoms, index in zip(labelled.frames, labelled.indices):
        try:
            graphs.append(backbone.graph(atoms))
        except (ValueError, TypeError) as error:
            raise type(error)(f"{labelled.source}: frame {index}: {error}") from None
    return graphs
