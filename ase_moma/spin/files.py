"""How a trained spin head is kept: its state in ``spin_head.safetensors`` beside the tuned potential,
its settings in the potential's record (finetune.json's ``spin_head``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ase_moma.module_files import load_state, load_tensors
from ase_moma.spin.head import SpinHead
from ase_moma.spin.model import SpinBackbone

SPIN_HEAD = "spin_head.safetensors"
LEGACY_HEAD = {"parallel_reference": False, "exchange_unit": 1.0, "environment": False, "local_order": False,
               "longitudinal": False}
"""The spin-head settings of files written before they were recorded (finetune.json version 1): J in eV/μB²,
exchange ½ Σ J m_i·m_j, J of distance and species only, magnitudes of geometry only, no on-site (Landau)
energy. :func:`complete_head_settings` fills them in when such a file is read."""


def head_record(spin: SpinBackbone, exchange_start: dict[str, Any] | None) -> dict[str, Any]:
    """The record of ``spin``'s head: its settings, size and the exchange start it trained from."""
    return {"config": spin.head.config(), "parameters": sum(p.numel() for p in spin.head.parameters()),
            "fraction_of_backbone": spin.parameter_fraction(), "exchange_start": exchange_start}


def complete_head_settings(record: dict[str, Any]) -> dict[str, Any]:
    """finetune.json's migration from version 1 to 2: the spin head's settings (``record["spin_head"]
    ["config"]``) completed with LEGACY_HEAD's values for those it lacks."""
    if record.get("spin_head"):
        record["spin_head"]["config"] = {**LEGACY_HEAD, **record["spin_head"]["config"]}
    return record


def load_head(folder: Path, config: dict[str, Any]) -> SpinHead:
    """The head saved in ``folder`` with its recorded ``config`` (every setting, as finetune.json's current
    version records them)."""
    head = SpinHead(**config)
    load_state(head, load_tensors(folder / SPIN_HEAD), folder / SPIN_HEAD)
    return head
