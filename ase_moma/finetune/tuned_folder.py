"""A fine-tuned potential's folder read back (written by :mod:`ase_moma.finetune.export`).

Loading checks every checksum and the base backbone's fingerprint, and imports no training code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ase_moma.backbone import Backbone
from ase_moma.formats import Format, Migration
from ase_moma.module_files import load_state, load_tensors, read_folder_record, verify_files
from ase_moma.provenance import load_recorded_backbone
from ase_moma.saved_models import SavedModelKind
from ase_moma.spin.files import complete_head_settings, load_head
from ase_moma.spin.model import SpinBackbone

FINETUNE_JSON = "finetune.json"
MODEL = "model.safetensors"
MODULE = "module"
REPORT = "report.json"
CHART = "sparsity.png"
FINETUNE_FORMAT = Format("ase-moma/finetune", "fine-tuning record", separator="-", migrations=(
    Migration("the spin head's settings are recorded in full: a head written before a setting existed gets "
              "the value it had then (LEGACY_HEAD)", record=complete_head_settings),))
"""finetune.json's format. Version 2 records every spin-head setting; version 1 files (release 0.1.0 and
before) may lack those added after they were written."""


def read_tuned(out: str | Path) -> dict[str, Any]:
    """finetune.json of ``out``; a clear error when ``out`` is not a fine-tuned potential."""
    return read_folder_record(out, FINETUNE_JSON, FINETUNE_FORMAT, "a fine-tuned potential")


def load_tuned_backbone(out: str | Path, device: str | torch.device = "auto",
                        dtype: str | torch.dtype = "float32") -> Backbone:
    """The fine-tuned potential in ``out`` as a backbone: its base (fingerprint checked) with the
    tuned weights of ``model.safetensors`` (checksum checked), and its spin head when it has one
    (a :class:`SpinBackbone`, which predicts moments). Its fingerprint identifies the weights."""
    record = read_tuned(out)
    verify_files(Path(out), record["files"], str(Path(out) / FINETUNE_JSON))
    backbone = load_recorded_backbone(record["backbone"], f"the fine-tuned potential in {out}", device, dtype)
    load_state(backbone.model, load_tensors(Path(out) / MODEL), Path(out) / MODEL)
    backbone.mark_saved(str(Path(out).resolve()))
    if record.get("spin_head"):
        backbone = SpinBackbone(backbone, load_head(Path(out), record["spin_head"]["config"]))
    return backbone


class TunedFolder(SavedModelKind):
    """An ``ase-moma finetune --backbone`` output folder: a plain tuned potential (+ its spin head)."""

    name, marker, loader = "tuned", FINETUNE_JSON, staticmethod(load_tuned_backbone)
    description = "ase-moma finetune --backbone output (finetune.json): a tuned potential"
