"""MoMa Algorithm 1, step 5: fine-tune a composed model with a fresh head on its task.

The training split is the one the composition was computed on (its hash is
checked); the validation split drives early stopping and the test split, when
the split file has one, is reported. The head starts as the ridge probe of the
composed model's features (LP-FT), and the model kept is the best on validation
among the epochs of fine-tuning, that start, and the plain backbone with its own
probe: a composition that does not beat the plain backbone's probe on validation
is not kept (module.json says which was kept, under ``composition.kept``). The
plain probe is fitted first, and a fine-tune whose validation MAE has not gone
below it within the training engine's GRACE epochs stops there (``training.gave_up``). The
wall time of each stage is kept under ``timings`` (seconds). The
result is a hub module folder in ``OUT/model/``: ``load_calculator(OUT)``
serves it and ``ase-moma hub add OUT/model`` adds it to a hub built on the
same backbone.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

from ase_moma.atomic_io import atomic_directory
from ase_moma.compose.composed import FINETUNED, apply_merged, base_backbone
from ase_moma.compose.recipe import read_recipe
from ase_moma.training.property_models import (TrainConfig, build_property_model, evaluate, fit, module_record,
                                               trained_module_files)
from ase_moma.module_files import write_module_folder
from ase_moma.stage_clock import StageClock
from ase_moma.labelled_data import load_task_data
from ase_moma.training.work_folder import WorkFolder

DOWNSTREAM = TrainConfig(epochs=60, batch_size=32, lr=8e-5, head_lr=1e-3, patience=10, mode="downstream")
"""MoMa's downstream settings for JMP-L (batch 32, lr 8e-5, ≤ 60 epochs, patience 10)."""


def finetune_composed(out: str | Path, config: TrainConfig | None = None, *, device: str = "auto",
                      progress: bool = True, plain_fallback: bool = True) -> dict[str, Any]:
    """Fine-tune the composed model in ``out``; write ``OUT/model/``; return its module.json.

    config: training settings (default DOWNSTREAM); its ``kind`` is the
    composition's. An interrupted run resumes from ``OUT/.work/model/`` (:mod:`ase_moma.training.work_folder`).
    plain_fallback: keep the plain backbone's probe when it beats the
    composition on validation (off only to measure a composition as it is,
    e.g. each module's own fine-tuned error against its kNN proxy).
    """
    out = Path(out)
    recipe = read_recipe(out)
    if recipe.get("potential") is not None:
        raise ValueError(f"{out} is a composed potential, not a property model's composition: adapt it to DFT "
                         f"data with `ase-moma finetune --backbone {out} --train T --valid V -o OUT`")
    config = dataclasses.replace(config or DOWNSTREAM, kind=recipe["kind"])
    config.check()
    task = recipe["task"]
    task_data = load_task_data(task["data"], task["target"], task["split"], task["task"],
                               val_fraction=task["val_fraction"], seed=task["seed"], max_train=task["n_train"])
    if task_data.train.data_hash() != task["train_hash"]:
        raise ValueError(f"the training split of {task['data']} is not the one {out} was composed on "
                         "(the data or split file changed)")
    clock = StageClock()
    backbone = base_backbone(out, device)
    adapters = apply_merged(out, backbone)
    parts = task_data.graphs(backbone)
    readout = config.resolved_readout(task["target"])
    clock.lap("graphs")
    plain, plain_val = None, None
    if plain_fallback and recipe["merged"] is not None:
        plain = build_property_model(base_backbone(out, device), config, readout, parts["train"][0], task_data.train)
        plain_val = evaluate(plain, {"val": parts["val"]}, float(task_data.train.targets.mean()))["val_mae"]
        clock.lap("plain backbone probe")
    model = build_property_model(backbone, config, readout, parts["train"][0], task_data.train, adapters)
    data_hashes = {"train_hash": task["train_hash"], "val_hash": task_data.val.data_hash()}
    work = WorkFolder.for_output(out, FINETUNED, {"merged": recipe["merged"], "config": dataclasses.asdict(config),
                                                  **data_hashes})
    result = fit(model, config, *parts["train"], *parts["val"], work, progress=progress,
                 desc=f"fine-tune {task['task']}", to_beat=plain_val)
    clock.lap("fine-tune")
    kept = "fine-tuned composition"
    if plain is not None and plain_val < result.best["val_mae"]:
        model, kept = plain, "plain backbone probe"

    meta = module_record(model, config, task_data, parts, result, task=task["task"], unit=task["unit"],
                         source=task["data"], data_hashes=data_hashes)
    clock.lap("evaluation")
    meta.update(name=_module_name(f"{task['task']}_{recipe['strategy']}"), composition={
        "strategy": recipe["strategy"], "merged": recipe["merged"], "kept": kept, "plain_probe_val_mae": plain_val,
        "modules": [{k: m[k] for k in ("name", "sha256", "weight")} for m in recipe["modules"] if m["weight"] > 0]})
    tensors = trained_module_files(model, config, meta, parts, work)
    if config.modalities:
        clock.lap("fusion")
    meta["timings"] = clock.seconds
    with atomic_directory(out / FINETUNED, overwrite=True) as tmp:
        write_module_folder(tmp, meta, tensors, recipe["backbone"])
    work.remove()
    return meta


def _module_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text).lstrip("_.-")[:128] or "composed"
