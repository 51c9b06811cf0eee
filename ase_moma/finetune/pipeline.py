"""``finetune_potential``: read the data, adapt a backbone, evaluate, write OUT/ — the CLI's job."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from ase import Atoms

from ase_moma.finetune.export import write_tuned
from ase_moma.finetune.loss import evaluate
from ase_moma.finetune.potential_data import PotentialSet, read_potential_set
from ase_moma.finetune.trainer import FinetuneConfig, Finetuner

DataSource = str | Path | Sequence[Atoms]


def finetune_potential(backbone: str, train: DataSource, valid: DataSource, out: str | Path,
                       config: FinetuneConfig | None = None, *, test: DataSource | None = None,
                       source: str | None = None, name: str | None = None, device: str = "auto",
                       dtype: str = "float32", progress: bool = True, overwrite: bool = False,
                       **options: Any) -> dict[str, Any]:
    """Adapt ``backbone`` to ``train`` (early stopping on ``valid``) and write OUT/.

    backbone: a registered name (``source`` its checkpoint, None the embedded
    default), or a composed or fine-tuned folder. train, valid, test: extxyz
    files (or frames) with energies, and forces/stress where weighted (and
    moments for a spin head, ``config.spin_head``).
    name: the task name for the hub module (default: the training file's stem).
    Returns the finetune.json content; ``load_calculator(out)`` loads the result.
    """
    from ase_moma.hub.store import backbone_record
    from ase_moma.registry import load_backbone

    config = config or FinetuneConfig()
    config.check()
    if Path(out).exists() and not overwrite:
        raise FileExistsError(f"{out} already exists (pass overwrite=True / --overwrite to replace it)")
    need = {"forces": config.loss.forces > 0, "stress": config.loss.stress > 0, "magmoms": config.spin_head}
    data: dict[str, PotentialSet] = {
        "train": read_potential_set(train, what="training set", **need),
        "valid": read_potential_set(valid, what="validation set", **need)}
    if test is not None:
        data["test"] = read_potential_set(test, what="test set", **need)
    model = load_backbone(backbone, source, device=device, dtype=dtype, **options)
    base = backbone_record(model)
    tuner = Finetuner(model, config)
    result = tuner.fit(data["train"], data["valid"], progress=progress)
    delta = tuner.export()
    metrics = {role: evaluate(tuner.model, [model.graph(a) for a in part.frames], part, config.loss)
               for role, part in data.items() if role != "train"}
    task = name or (Path(train).stem if isinstance(train, (str, Path)) else "finetune")
    return write_tuned(out, model, base, delta, config, result, data, metrics, name=task, overwrite=overwrite,
                       spin=tuner.spin)
