"""module.json's format (a hub module, a composed model's ``model/``, a tuned potential's ``module/``) and how
files of older versions are read.

Version 1 is every module.json written before the format carried a version (release 0.1.0 and before). Within
it, a fusion head saved before fusion averaged members is one head whose tensors have no member prefix, and a
forest saved before boosting has no ``combine`` (it was the mean of its trees). Version 2 records its version,
and its ``fusion.safetensors`` always has members (``member<k>.``) and every forest its ``combine``.
"""

from __future__ import annotations

from typing import Any

import torch

from ase_moma.formats import Format, Migration

FUSION = "fusion.safetensors"  # a fusion head over other views of the structure (ase_moma.modalities)
FIRST_MEMBER = "member0."
FOREST_ROOTS = "roots"
FOREST_COMBINE = "combine"


def _one_member(record: dict[str, Any]) -> dict[str, Any]:
    """A fusion record without members describes one member."""
    fusion = record.get("fusion")
    if isinstance(fusion, dict) and "members" not in fusion:
        fusion["members"] = [{}]
    return record


def _members_and_forest_means(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Unprefixed head tensors become member 0's; a forest without ``combine`` gets the mean of its trees,
    (0, 1/T) for T trees, which is how such a forest predicted."""
    if not any(key.startswith(FIRST_MEMBER) for key in tensors):
        tensors = {FIRST_MEMBER + key: value for key, value in tensors.items()}
    for key, roots in list(tensors.items()):
        if key.endswith("." + FOREST_ROOTS):
            combine = key[:-len(FOREST_ROOTS)] + FOREST_COMBINE
            tensors.setdefault(combine, torch.tensor([0.0, 1.0 / len(roots)], dtype=torch.float64))
    return tensors


MODULE_FORMAT = Format("ase-moma.module", "module metadata", unversioned=True, migrations=(
    Migration("fusion heads are stored as members, forests with their combination", record=_one_member,
              tensors={FUSION: _members_and_forest_means}),))
"""module.json's format; a module.json without ``"schema"`` is version 1."""
