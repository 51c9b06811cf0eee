"""``finetune_potential``: load the backbone, check it can do what is asked, read the data, adapt,
evaluate, write OUT/ — the CLI's job.

Every epoch leaves a checkpoint in ``.work/OUT/`` beside OUT/
(:mod:`ase_moma.training.work_folder`); the same call after an interruption
resumes from it and ends with the same tuned weights as an uninterrupted run.
The checkpoint is removed once OUT/ is written.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from ase import Atoms
from ase.stress import voigt_6_to_full_3x3_stress

from ase_moma.calculators.batch import predict
from ase_moma.finetune.chunks import evaluation_batches
from ase_moma.finetune.export import write_tuned
from ase_moma.finetune.loss import evaluate
from ase_moma.finetune.potential_data import check_stress_unit, read_potential_set
from ase_moma.finetune.trainer import FinetuneConfig, Finetuner
from ase_moma.labelled_set import LabelledSet
from ase_moma.loading import load_backbone
from ase_moma.provenance import backbone_record
from ase_moma.training.work_folder import WorkFolder

DataSource = str | Path | Sequence[Atoms]


def finetune_potential(backbone: str, train: DataSource, valid: DataSource, out: str | Path,
                       config: FinetuneConfig | None = None, *, test: DataSource | None = None,
                       source: str | None = None, name: str | None = None, device: str = "auto",
                       dtype: str = "float32", progress: bool = True, overwrite: bool = False,
                       stress_unit: str = "eV/A^3", max_stress: float | None = None, stress_check: bool = True,
                       **options: Any) -> dict[str, Any]:
    """Adapt ``backbone`` to ``train`` (early stopping on ``valid``) and write OUT/.

    backbone: a registered name (``source`` its checkpoint, None the embedded
    default), or a saved model's folder. train, valid, test: extxyz files (or
    frames) with energies, and forces/stress where weighted (and moments for a
    spin head, ``config.spin_head``). stress_unit: the unit the files' stresses
    are written in (``eV/A^3``, ``GPa`` or ``kbar``); max_stress: drop frames
    with a stress component above this many eV/Å³ (reported in finetune.json);
    stress_check: compare the stress labels with the backbone's predictions
    first and refuse a file whose declared unit they contradict. name: the task
    name for the hub module (default: the training file's stem). Returns the
    finetune.json content; ``load_calculator(out)`` loads the result.
    """
    config = config or FinetuneConfig()
    config.check()
    if Path(out).exists() and not overwrite:
        raise FileExistsError(f"{out} already exists (pass overwrite=True / --overwrite to replace it)")
    model = load_backbone(backbone, source, device=device, dtype=dtype, **options)
    base = backbone_record(model)
    tuner = Finetuner(model, config)  # refuses what the backbone cannot do, before any data is read
    config = tuner.config  # its reference refit settled for this backbone
    need = {"forces": config.loss.forces > 0, "stress": config.loss.stress > 0, "magmoms": config.spin_head,
            "stress_unit": stress_unit, "max_stress": max_stress}
    data: dict[str, LabelledSet] = {
        "train": read_potential_set(train, what="training set", **need),
        "valid": read_potential_set(valid, what="validation set", **need)}
    if test is not None:
        data["test"] = read_potential_set(test, what="test set", **need)
    for role, part in data.items():
        if part.dropped and progress:
            more = " …" if len(part.dropped) > 20 else ""
            print(f"{role}: dropped {len(part.dropped)} frames of {part.source} with a stress above "
                  f"{max_stress} eV/Å³: {', '.join(map(str, part.dropped[:20]))}{more}")
        if stress_check and part.stress is not None:
            frames = part.frames[:32]
            rows = [row for batch in evaluation_batches([len(a) for a in frames], tuner.chunk_atoms)
                    for row in predict(model, [frames[i] for i in batch], batch_size=len(batch), progress=False)]
            if all("stress" in row for row in rows):
                predicted = np.stack([voigt_6_to_full_3x3_stress(row["stress"]) for row in rows])
                check_stress_unit(predicted, _first(part, len(rows)), stress_unit)
    work = WorkFolder.for_output(Path(out).parent, Path(out).name, {
        "base": base["fingerprint"], "config": _defining(config),
        "data": {role: part.data_hash() for role, part in data.items()}})
    result = tuner.fit(data["train"], data["valid"], progress=progress, work=work)
    if result.resumed_from and progress:
        print(f"resumed from the checkpoint of epoch {result.resumed_from} in {work.path}")
    thresholds = tuner.thresholds()
    delta = tuner.export()
    metrics = {role: evaluate(tuner.model, tuner.graphs(part), part, config.loss, tuner.chunk_atoms)
               for role, part in data.items() if role != "train"}
    task = name or (Path(train).stem if isinstance(train, (str, Path)) else "finetune")
    record = write_tuned(out, model, base, delta, config, result, data, metrics, name=task, overwrite=overwrite,
                         spin=tuner.spin, thresholds=thresholds, reference_shifts=tuner.reference_shifts,
                         exchange_start=tuner.exchange_start.record() if tuner.exchange_start else None)
    work.remove()
    return record


def _defining(config: FinetuneConfig) -> dict:
    """The settings that define a run, for its resume hash: all but ``chunk_atoms``, which changes how a
    step is computed, not the step."""
    return {key: value for key, value in dataclasses.asdict(config).items() if key != "chunk_atoms"}


def _first(data: LabelledSet, count: int) -> LabelledSet:
    """The first ``count`` frames of ``data`` with their stress labels (for the unit check)."""
    return dataclasses.replace(data.subset(range(min(count, len(data)))), forces=None, magmoms=None)
