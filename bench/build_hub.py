"""Build a module hub: one module per upstream task (and, optionally, per matminer task).

Upstream tasks (../shared/data/upstream): perov_5 heat_all, ind_gap, dir_gap (cubic
perovskites) and carbon_24 energy_per_atom (read out through the backbone's own
energy head). With --matminer, one module per matminer task, trained on that
task's train/val split of seed 0 (its test frames are never seen).

--quick subsamples and caps epochs so the four upstream modules train on the
2-core CPU machine in under 30 minutes; the default (full) mode uses all data
and the paper's schedule (80 epochs, patience 10) and is meant for a GPU.

--starter builds the hub that ships with the package (ase_moma/hub/starter,
copied out by `ase-moma hub starter PATH`): adapter modules for the four upstream
tasks, the ten matminer tasks (seed-0 training split only) and an energy-per-atom
module for each mlearn element set (BSD-licensed; the GPL-licensed InP and
Alexandria sets are left out of a shipped artefact), on a schedule the 2-core CPU
machine finishes in about an hour (5 epochs, patience 2; upstream sets subsampled to
800 structures, matminer training splits to 500; the mlearn energy modules, whose 64-atom
cells cost about 15 s a step there, 3 epochs on 48 frames: each module starts at its ridge probe
or fitted reference energies, so short schedules give modules no worse than that start on
validation). Every module.json
records its seed and the sha256 of its training and validation data; the
script refuses to finish with a hub over 20 MB.
Prints, per module: wall time, validation MAE next to the target's standard
deviation and the MAE of predicting the training mean.

    python bench/build_hub.py --quick [-o bench/out/hub] [--kind full|adapter] [--matminer]
    python bench/build_hub.py --kind full --matminer --epochs E --max-train N   # a mid-sized GPU hub
    python bench/build_hub.py --starter
    python bench/build_hub.py --starter-potentials   # then the four mlearn potential modules beside them
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

from ase_moma import load_backbone
from ase_moma.hub import Hub, TrainConfig, train_module

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
UPSTREAM = [  # (module name, file, info key, unit, quick max_train, quick val_fraction)
    ("perov_heat_all", "upstream/perov_5.extxyz", "heat_all", "eV/atom", 800, 0.04),
    ("perov_ind_gap", "upstream/perov_5.extxyz", "ind_gap", "eV", 800, 0.04),
    ("perov_dir_gap", "upstream/perov_5.extxyz", "dir_gap", "eV", 800, 0.04),
    ("carbon_energy_per_atom", "upstream/carbon_24.extxyz", "energy_per_atom", "eV/atom", 400, 0.08),
]
STARTER = Path(__file__).resolve().parents[1] / "ase_moma" / "hub" / "starter"
STARTER_LIMIT_MB = 20.0
MLEARN = ("Si", "Ge", "Li", "Mo")


def plan(args: argparse.Namespace) -> list[dict]:
    """One training job per module: data, target, split and configuration."""
    quick = dict(epochs=6, patience=6, batch_size=16, mode="quick")
    starter = dict(epochs=5, patience=2, batch_size=16, mode="starter")
    full = dict(epochs=80, patience=10, batch_size=64, mode="full")
    jobs = []
    for name, file, key, unit, max_train, val_fraction in UPSTREAM:
        if args.quick or args.starter:
            settings = dict(starter if args.starter else quick, max_train=max_train, val_fraction=val_fraction)
        else:
            settings = dict(full)
        jobs.append(dict(name=name, data=DATA / file, target=key, unit=unit, split=None, task=Path(file).stem,
                         config=TrainConfig(kind=args.kind, **settings)))
    if args.matminer or args.starter:
        tasks = json.loads((DATA / "matminer" / "tasks.json").read_text())
        for task, info in sorted(tasks.items()):
            settings = (dict(starter, max_train=500) if args.starter else dict(quick, max_train=300) if args.quick
                        else dict(full))
            jobs.append(dict(name=f"matminer_{task}", data=DATA / "matminer" / info["file"], target="target",
                             unit=info["unit"], split=DATA / "matminer" / "splits" / "seed0.json", task=task,
                             config=TrainConfig(kind=args.kind, **settings)))
    if args.epochs is not None or args.max_train is not None:  # not a named schedule: module.json records the values
        for job in jobs:
            config = job["config"]
            epochs = config.epochs if args.epochs is None else args.epochs
            max_train = config.max_train if args.max_train is None else args.max_train
            job["config"] = dataclasses.replace(config, mode="custom", epochs=epochs, max_train=max_train,
                                                patience=min(config.patience, epochs))
    if args.starter:
        for element in MLEARN:
            jobs.append(dict(name=f"mlearn_{element}_energy", data=DATA / "mlip" / f"mlearn_{element}_training.extxyz",
                             target="energy_per_atom", unit="eV/atom", split=None, task=f"mlearn_{element}",
                             config=TrainConfig(kind=args.kind, **dict(starter, epochs=3, max_train=48))))
    return jobs


def add_starter_potentials(work: Path) -> None:
    """Train (or reuse) a sparse-L potential module per mlearn set and add it to the starter hub as
    ``mlearn_<element>_potential``."""
    from compose_potentials import module_name, train_modules

    sets = [f"mlearn_{element}" for element in MLEARN]
    train_modules(work, sets, ["sparse-L"], steps=100)
    source, starter = Hub(work / "hub"), Hub(STARTER)
    for name in sets:
        added = starter.add(source.folder(module_name(name, "sparse-L")), name=f"{name}_potential", overwrite=True)
        print(f"added {added} to {STARTER}", flush=True)
    size_mb = sum(f.stat().st_size for f in STARTER.rglob("*") if f.is_file()) / 1e6
    print(f"starter hub size {size_mb:.1f} MB")
    if size_mb > STARTER_LIMIT_MB:
        raise SystemExit(f"the starter hub is {size_mb:.1f} MB, over the {STARTER_LIMIT_MB} MB it may take")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", help="hub directory, created if absent (default: bench/out/hub, "
                        "or ase_moma/hub/starter with --starter)")
    parser.add_argument("--quick", action="store_true", help="subsample, few epochs (CPU, < 30 min)")
    parser.add_argument("--starter", action="store_true",
                        help="build the shipped starter hub (adapters, CPU schedule) in ase_moma/hub/starter")
    parser.add_argument("--starter-potentials", action="store_true",
                        help="add the starter hub's potential modules: SevenNet-0 sparse-L fine-tuned on each "
                        "mlearn set (BSD-3-Clause), trained by bench/compose_potentials.py's modules stage in "
                        "--potentials-work (modules already there are reused)")
    parser.add_argument("--potentials-work", default="bench/out/compose_potentials")
    parser.add_argument("--kind", default="full", choices=["full", "adapter"])
    parser.add_argument("--matminer", action="store_true", help="also one module per matminer task")
    parser.add_argument("--backbone", default="sevennet")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--only", nargs="*", help="train only these module names")
    parser.add_argument("--epochs", type=int, help="epochs of every upstream and matminer module, in place of the "
                        "mode's (patience capped at it)")
    parser.add_argument("--max-train", type=int, help="training structures of every upstream and matminer module, "
                        "in place of the mode's cap (a GPU hub between --quick and the paper's schedule)")
    args = parser.parse_args()
    if not DATA.is_dir():
        raise SystemExit(f"real data not found at {DATA}")
    if args.starter_potentials:
        add_starter_potentials(Path(args.potentials_work))
        return
    if args.starter and (args.epochs is not None or args.max_train is not None):
        parser.error("--starter builds the recorded starter schedule; --epochs and --max-train do not apply")
    if args.starter:
        args.kind = "adapter"
    output = Path(args.output or (STARTER if args.starter else "bench/out/hub"))
    hub = Hub(output) if (output / "hub.json").exists() else Hub.create(
        output, load_backbone(args.backbone, device="cpu"))
    print(f"hub {output}: {hub.backbone['name']} ({hub.backbone['version']}), mode "
          f"{'starter' if args.starter else 'quick' if args.quick else 'full'}, kind {args.kind}, "
          f"torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    rows = []
    start_all = time.perf_counter()
    for job in plan(args):
        if args.only and job["name"] not in args.only:
            continue
        start = time.perf_counter()
        meta = train_module(hub, job["name"], job["data"], job["target"], config=job["config"],
                            split=job["split"], task=job["task"], unit=job["unit"], device=args.device,
                            overwrite=True)
        metrics = meta["metrics"]
        row = {"module": job["name"], "n_train": meta["n_train"], "n_val": meta["n_val"],
               "epochs": meta["training"]["epochs_run"], "seconds": time.perf_counter() - start,
               "val_mae": metrics["val_mae"], "target_std": metrics["train_target_std"],
               "mae_predict_mean": metrics["val_mae_predict_mean"], "unit": job["unit"],
               "size_mb": sum((hub.folder(job["name"]) / f).stat().st_size for f in meta["files"]) / 1e6}
        rows.append(row)
        print(json.dumps(row), flush=True)
    total = time.perf_counter() - start_all
    print(f"\n{'module':26s} {'n_train':>7s} {'epochs':>6s} {'time s':>7s} {'val MAE':>9s} "
          f"{'target std':>10s} {'MAE(mean)':>9s} {'ratio':>6s}  unit")
    for row in rows:
        print(f"{row['module']:26s} {row['n_train']:7d} {row['epochs']:6d} {row['seconds']:7.0f} "
              f"{row['val_mae']:9.4f} {row['target_std']:10.4f} {row['mae_predict_mean']:9.4f} "
              f"{row['val_mae'] / row['mae_predict_mean']:6.2f}  {row['unit']}")
    print(f"total wall time {total:.0f} s ({total / 60:.1f} min)")
    size_mb = sum(f.stat().st_size for f in output.rglob("*") if f.is_file()) / 1e6
    print(f"hub size {size_mb:.1f} MB")
    if args.starter and size_mb > STARTER_LIMIT_MB:
        raise SystemExit(f"the starter hub is {size_mb:.1f} MB, over the {STARTER_LIMIT_MB} MB it may take in the "
                         "repository")
    reports = Path("bench/out")
    reports.mkdir(parents=True, exist_ok=True)
    (reports / f"{output.name}_report.json").write_text(json.dumps({"rows": rows, "total_seconds": total}, indent=1))


if __name__ == "__main__":
    main()
