"""Writing a fine-tuned potential's folder (``ase-moma finetune --backbone ... -o OUT/``).

OUT/ holds ``finetune.json`` (the base backbone's record with its fingerprint,
method, settings, data hashes, history, metrics), ``model.safetensors`` (the
whole tuned state: a plain backbone of the base architecture, as fast as the
original), ``module/`` (a hub module of kind ``delta``: the change from the
pretrained weights as indices + values, for ``ase-moma hub add``),
``report.json`` and ``sparsity.png`` (which path weights moved), and with a
spin head ``spin_head.safetensors`` (its settings are in finetune.json). It is
written as one atomic directory. Reading it back is
:mod:`ase_moma.finetune.tuned_folder`'s, which imports no training code.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from ase_moma.atomic_io import atomic_directory
from ase_moma.backbone import Backbone
from ase_moma.delta import Delta, changed_entries, delta_tensors
from ase_moma.finetune.report import sparsity_chart, sparsity_report
from ase_moma.finetune.trainer import FinetuneConfig
from ase_moma.finetune.tuned_folder import CHART, FINETUNE_FORMAT, FINETUNE_JSON, MODEL, MODULE, REPORT
from ase_moma.labelled_set import LabelledSet
from ase_moma.module_files import DELTA, save_tensors, write_json, write_module_folder
from ase_moma.spin.files import SPIN_HEAD, head_record
from ase_moma.spin.model import SpinBackbone
from ase_moma.training.engine import EngineResult
from ase_moma.version import CREATED_BY


def write_tuned(out: str | Path, backbone: Backbone, base: dict[str, Any], delta: Delta,
                config: FinetuneConfig, result: EngineResult, data: dict[str, LabelledSet],
                metrics: dict[str, dict[str, float]], *, name: str, overwrite: bool = False,
                spin: SpinBackbone | None = None, thresholds: dict[str, float] | None = None,
                reference_shifts: dict[int, float] | None = None,
                exchange_start: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write OUT/ for ``backbone`` (tuned in place, plain) started from ``base`` (its backbone record).

    data: the sets by role (``train``, ``valid``, optionally ``test``);
    metrics: their errors after tuning (and ``zero_shot`` ones if measured).
    name: the task name recorded in the hub module. spin: the backbone with its
    trained spin head, saved beside it. thresholds: the sparse increments'
    per-layer thresholds; reference_shifts: the refitted reference energies
    (eV per atom of each element); exchange_start: the spin head's exchange start
    (``ExchangeFit.record()``), or None without one. Returns finetune.json's content.
    """
    shapes = {k: v.shape for k, v in backbone.model.state_dict().items()}
    report = sparsity_report(backbone.path_weights(), shapes, delta)
    settings = dataclasses.asdict(config)
    data_record = {role: {"source": part.source, "frames": len(part), "sha256": part.data_hash(),
                          "dropped_over_max_stress": part.dropped or []}
                   for role, part in data.items()}
    summary = {**config.make_method().record(), "path_weights_updated": report["total"], "entries_changed": changed_entries(delta)}
    with atomic_directory(out, overwrite=overwrite) as tmp:
        model_sha = save_tensors(tmp / MODEL, dict(backbone.model.state_dict()))
        (tmp / MODULE).mkdir()
        valid = metrics.get("valid", {})
        write_module_folder(tmp / MODULE, {
            "name": name, "task": name, "kind": "delta", "target": "energy_per_atom", "unit": "eV/atom",
            "readout": "energy_per_atom", "n_train": len(data["train"]), "n_val": len(data["valid"]),
            "elements": data["train"].elements(),
            "metrics": {"val_mae": valid.get("energy_mae", float("nan")) / 1000, **{
                f"{role}_{k}": v for role, values in metrics.items() for k, v in values.items()}},
            "training": settings, "data": data_record, **summary}, {DELTA: delta_tensors(delta)}, base)
        write_json(tmp / REPORT, {**summary, "sparsity": report, "thresholds": thresholds or {}})
        sparsity_chart(report, f"{config.method} on {name}", tmp / CHART)
        record = {"schema": FINETUNE_FORMAT.tag, "backbone": base, "name": name, **summary, "config": settings,
                  "result": dict(dataclasses.asdict(result), thresholds=thresholds or {},
                                 reference_shifts=reference_shifts or {}),
                  "metrics": metrics, "data": data_record,
                  "files": {MODEL: model_sha}, "spin_head": None, "created_by": CREATED_BY}
        if spin is not None:
            record["files"][SPIN_HEAD] = save_tensors(tmp / SPIN_HEAD, dict(spin.head.state_dict()))
            record["spin_head"] = head_record(spin, exchange_start)
        write_json(tmp / FINETUNE_JSON, record)
    return record
