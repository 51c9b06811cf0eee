"""Training one hub module: a backbone (all weights or adapters) plus a read-out, on one task.

The loop itself (normalised Huber loss, AdamW, early stopping, resumable
checkpoints) is :func:`ase_moma.training.property_models.fit`; this module reads the task,
builds graphs and writes the result into the hub.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from ase_moma.capabilities import require
from ase_moma.training.property_models import (TrainConfig, build_property_model, fit, module_record,
                                               trained_module_files)
from ase_moma.hub.store import Hub, check_module_name
from ase_moma.labelled_data import load_task_data
from ase_moma.registry import backbone_class
from ase_moma.training.work_folder import WorkFolder


def train_module(hub: Hub | str | Path, name: str, data: str | Path, target: str, *,
                 config: TrainConfig | None = None, split: str | Path | None = None,
                 task: str | None = None, unit: str = "", device: str = "auto",
                 overwrite: bool = False, progress: bool = True) -> dict[str, Any]:
    """Fine-tune the hub's backbone on ``atoms.info[target]`` of ``data``; write module ``name``.

    split/task: a split file (``{task: {"train", "val", "test"}}``) and the task
    in it (default: the data file's stem); without one, a random split. Every
    frame is checked before training starts and nothing is written on error. An
    interrupted run leaves a checkpoint in ``HUB/.work/<name>/`` and the same call
    resumes from it. Returns the module's metadata as written to module.json.
    """
    config = config or TrainConfig()
    config.check()
    hub = hub if isinstance(hub, Hub) else Hub(hub)
    if config.kind == "adapter":
        require(backbone_class(hub.backbone["name"]).capabilities, hub.backbone["name"], "adapter modules",
                "adapters")
    check_module_name(name)
    if name in hub.names() and not overwrite:
        raise FileExistsError(f"hub {hub.path} already has a module {name!r} (pass overwrite to replace it)")
    task_data = load_task_data(data, target, split, task, val_fraction=config.val_fraction,
                               seed=config.seed, max_train=config.max_train)
    backbone = hub.load_backbone(device=device, dtype="float32")
    parts = task_data.graphs(backbone)
    readout = config.resolved_readout(target)
    model = build_property_model(backbone, config, readout, parts["train"][0], task_data.train)
    data_hashes = {"train_hash": task_data.train.data_hash(), "val_hash": task_data.val.data_hash()}
    work = WorkFolder.for_output(hub.path, name, {"hub": hub.backbone["fingerprint"], "name": name, "target": target,
                                                  "readout": readout, "config": dataclasses.asdict(config),
                                                  **data_hashes})
    result = fit(model, config, *parts["train"], *parts["val"], work, progress=progress,
                 desc=f"train {name}")

    meta = module_record(model, config, task_data, parts, result, task=task or Path(data).stem, unit=unit,
                         source=str(data), data_hashes=data_hashes)
    hub.write_module(name, meta, trained_module_files(model, config, meta, parts, work), overwrite=overwrite)
    work.remove()
    return hub.read_module(name)

