"""Fine-tuning measured against the trainers a user would pick instead.

SevenNet-0 fine-tuned by ``sevenn`` itself (its ``fine_tune.yaml`` preset, run through its own command line
with only the data paths, the epochs, the batch size and the seed changed) beside ``ase-moma finetune``'s
methods on the same model, the same training/validation/test frames, the same epochs and batch size, and
zero-shot. Each run is its own process with one compute thread; its peak resident memory is read from the
operating system (``wait4``), its wall time per epoch from its own log (sevenn's ``Epoch N elapsed``,
ase-moma's ``result.history[*].seconds``: both an epoch's steps and its validation). Every model is scored
by the same code on the same test frames: energy MAE per atom, force-component MAE, stress-component MAE
(Voigt, GPa).

``--backbone chgnet`` does the same for CHGNet 0.3.0: the native trainer is chgnet's own ``Trainer`` with the
recipe of its fine-tuning example (``bench/chgnet_trainer.py``; it trains on its own and reports its wall time
per epoch as the training's total over the epochs), beside ``ase-moma finetune --backbone chgnet``'s methods
that apply to it (full, sparse-L, sparse-H, LoRA; CHGNet names no read-out layers) and zero-shot
(chgnet's own calculator).

Splits are those of bench/compose_potentials.py (mlearn sets: their own test file; InP and the alloy set
80/10/10, seed 0); the training frames are the first ``--train`` of a seeded draw (data seed 0, the same for
every method and training seed), validation the set's first ``VALID`` validation frames.

    python bench/finetune_peers.py run [--sets mlearn_Si ...] [--methods native full sparse-L ...]
                                       [--train 40] [--epochs 10] [--batch-size 4] [--seeds 0 1 2]
                                       [--backbone sevennet|chgnet]
    python bench/finetune_peers.py tables

Rows are appended to ``bench/out/finetune_peers/rows.jsonl`` as runs finish; a (backbone, set, method, seed)
already there is skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import ase.io
import numpy as np
from ase import units

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compose_potentials import SETS, _ms, _sample, set_parts  # noqa: E402

OUT = Path(__file__).resolve().parent / "out" / "finetune_peers"
VALID = 10
NATIVE = "native"
ZERO_SHOT = "zero-shot"
OURS = {"full": ("full", "L"), "sparse-L": ("sparse", "L"), "sparse-H": ("sparse", "H"), "lora": ("lora", "L"),
        "readout": ("readout", "L")}
METHODS = (ZERO_SHOT, NATIVE, *OURS)
SEVENN_CHECKPOINT = "SevenNet-0_11July2024"
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
# e3nn 0.4.4 and sevenn 0.10 read their own bundled files with torch.load's old default, which torch >= 2.6
# refuses; sevenn's process is told to use the old default (its own wheel's files only, in its own process).
SEVENN_ENV = {"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}


def write_split(set_name: str, n_train: int, folder: Path) -> dict[str, Path]:
    """train/valid/test extxyz files of ``set_name`` in ``folder`` (the same for every method and seed)."""
    parts = set_parts(set_name)
    chosen = {"train": _sample(parts["train"], n_train, seed=0), "valid": parts["valid"][:VALID],
              "test": parts["test"]}
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for role, frames in chosen.items():
        paths[role] = folder / f"{role}.extxyz"
        if not paths[role].is_file():
            ase.io.write(paths[role], frames)
    return paths


def run_measured(command: list[str], cwd: Path, log: Path, env: dict[str, str] | None = None) -> dict[str, float]:
    """Run ``command`` with one compute thread (and ``env``); its wall time (s) and peak resident memory (MiB)."""
    start = time.perf_counter()
    with open(log, "w") as output:
        process = subprocess.Popen(command, cwd=cwd, stdout=output, stderr=subprocess.STDOUT,
                                   env={**os.environ, **ONE_THREAD, **(env or {})})
        _, status, usage = os.wait4(process.pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RuntimeError(f"{' '.join(command[:3])} … failed (exit {code}); see {log}")
    return {"wall_s": time.perf_counter() - start, "peak_rss_mib": usage.ru_maxrss / 1024}


def sevenn_input(split: dict[str, Path], epochs: int, batch_size: int, seed: int) -> str:
    """sevenn's fine_tune.yaml preset with only the data paths, epochs, batch size and seed changed."""
    import yaml
    from sevenn import __file__ as package

    config = yaml.safe_load((Path(package).parent / "presets" / "fine_tune.yaml").read_text())
    config["train"].update(epoch=epochs, random_seed=seed)
    config["data"].update(batch_size=batch_size, load_trainset_path=[str(split["train"])],
                          load_validset_path=[str(split["valid"])])
    config["data"].pop("load_testset_path", None)
    return yaml.safe_dump(config, sort_keys=False)


def run_native(split: dict[str, Path], folder: Path, epochs: int, batch_size: int, seed: int) -> dict:
    """Fine-tune SevenNet-0 with ``sevenn``'s own command line; the best-validation checkpoint and timings."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "input.yaml").write_text(sevenn_input(split, epochs, batch_size, seed))
    measured = run_measured([sys.executable, "-m", "sevenn.main.sevenn", "input.yaml", "-w", str(folder)],
                            folder, folder / "stdout.log", env=SEVENN_ENV)
    text = (folder / "log.sevenn").read_text()
    seconds = [_seconds(m) for m in re.findall(r"Epoch \d+ elapsed: ([\d:.]+)", text)]
    return {**measured, "epoch_seconds": seconds, "model": str(folder / "checkpoint_best.pth")}


def _seconds(clock: str) -> float:
    hours, minutes, seconds = clock.split(":")
    return 3600 * int(hours) + 60 * int(minutes) + float(seconds)


def run_chgnet_native(split: dict[str, Path], folder: Path, epochs: int, batch_size: int, seed: int) -> dict:
    """Fine-tune CHGNet with its own Trainer (bench/chgnet_trainer.py, in its own process); its test errors,
    wall time per epoch and peak memory."""
    folder.mkdir(parents=True, exist_ok=True)
    script = Path(__file__).resolve().parent / "chgnet_trainer.py"
    measured = run_measured([sys.executable, str(script), str(split["train"]), str(split["valid"]), str(split["test"]),
                             "--epochs", str(epochs), "--batch-size", str(batch_size), "--seed", str(seed),
                             "--out", str(folder / "result.json")], folder, folder / "stdout.log")
    return {**measured, **json.loads((folder / "result.json").read_text())}


def run_ours(split: dict[str, Path], folder: Path, method: str, epochs: int, batch_size: int, seed: int,
             backbone: str = "sevennet") -> dict:
    """``ase-moma finetune --backbone BACKBONE`` with ``method``'s settings and otherwise its defaults."""
    name, preset = OURS[method]
    shutil.rmtree(folder, ignore_errors=True)
    folder.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-c", "import sys; from ase_moma.cli import main; sys.exit(main(sys.argv[1:]))",
               "finetune", "--backbone", backbone, "--train", str(split["train"]), "--valid", str(split["valid"]),
               "--method", name, "--preset", preset, "--epochs", str(epochs), "--batch-size", str(batch_size),
               "--seed", str(seed), "--device", "cpu", "-o", str(folder)]
    measured = run_measured(command, folder.parent, folder.parent / f"{folder.name}.log")
    record = json.loads((folder / "finetune.json").read_text())
    seconds = [row["seconds"] for row in record["result"]["history"] if "seconds" in row]
    return {**measured, "epoch_seconds": seconds, "model": str(folder),
            "moved": record["path_weights_updated"]["fraction"], "steps": record["result"]["steps"]}


def calculator(method: str, model: str | None, backbone: str = "sevennet"):
    """The ASE calculator of a run's result (the backbone's own for its checkpoints and for zero-shot)."""
    if method in OURS:
        from ase_moma import load_calculator

        return load_calculator(model, device="cpu")
    if backbone == "chgnet":
        from chgnet.model.dynamics import CHGNetCalculator

        return CHGNetCalculator(use_device="cpu")
    import torch
    from sevenn.calculator import SevenNetCalculator

    with torch.serialization.safe_globals([slice]):
        return SevenNetCalculator(model=model or "7net-0", device="cpu")


def test_errors(calc, frames: list) -> dict[str, float]:
    """Energy MAE (meV/atom), force-component MAE (meV/Å), stress-component MAE (GPa, Voigt) on ``frames``."""
    energy, forces, stress = [], [], []
    for atoms in frames:
        labels = atoms.calc.results
        copy = atoms.copy()
        copy.calc = calc
        energy.append(abs(copy.get_potential_energy() - labels["energy"]) / len(atoms))
        forces.append(np.abs(copy.get_forces() - labels["forces"]).ravel())
        if "stress" in labels:
            stress.append(np.abs(copy.get_stress() - _voigt(labels["stress"])))
    return {"energy_mae": 1000 * float(np.mean(energy)), "forces_mae": 1000 * float(np.mean(np.concatenate(forces))),
            "stress_mae": float(np.mean(stress)) / units.GPa if stress else float("nan")}


def _voigt(stress: np.ndarray) -> np.ndarray:
    stress = np.asarray(stress)
    return stress if stress.shape == (6,) else stress[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]


def run(sets: list[str], methods: list[str], n_train: int, epochs: int, batch_size: int, seeds: list[int],
        backbone: str = "sevennet") -> None:
    rows_path = OUT / "rows.jsonl"
    done = {(r.get("backbone", "sevennet"), r["set"], r["method"], r["seed"], r["train"], r["epochs"])
            for r in _rows(rows_path)}
    for set_name in sets:
        split = write_split(set_name, n_train, OUT / "data" / f"{set_name}-n{n_train}")
        test = ase.io.read(split["test"], ":")
        for seed in seeds:
            for method in methods:
                if ((backbone, set_name, method, seed, n_train, epochs) in done
                        or (method == ZERO_SHOT and seed != seeds[0])):
                    continue
                folder = OUT / "runs" / f"{backbone}-{set_name}-n{n_train}-e{epochs}-{method}-s{seed}"
                if method == ZERO_SHOT:
                    result = {"model": None}
                elif method == NATIVE and backbone == "chgnet":
                    result = run_chgnet_native(split, folder, epochs, batch_size, seed)
                elif method == NATIVE:
                    result = run_native(split, folder, epochs, batch_size, seed)
                else:
                    result = run_ours(split, folder, method, epochs, batch_size, seed, backbone)
                errors = result.pop("test") if "test" in result else test_errors(
                    calculator(method, result["model"], backbone), test)
                row = {"backbone": backbone, "set": set_name, "method": method, "seed": seed, "train": n_train,
                       "epochs": epochs,
                       "batch_size": batch_size, "test": errors, "test_frames": len(test),
                       **{k: v for k, v in result.items() if k != "model"}}
                with open(rows_path, "a") as handle:
                    handle.write(json.dumps(row) + "\n")
                print(f"{backbone} {set_name} {method:9s} seed {seed}: F {errors['forces_mae']:6.1f} meV/Å  "
                      f"E {errors['energy_mae']:6.2f} meV/atom  S {errors['stress_mae']:.3f} GPa"
                      + (f"  {np.mean(result['epoch_seconds']):.1f} s/epoch  {result['peak_rss_mib']:.0f} MiB"
                         if "epoch_seconds" in result else ""), flush=True)
                if folder.exists():
                    shutil.rmtree(folder)


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def print_tables() -> None:
    """Markdown: per set, each method's test MAE (mean ± std over seeds), s/epoch, peak memory, and the
    force ratio against the native trainer."""
    rows = _rows(OUT / "rows.jsonl")
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row.get("backbone", "sevennet"), row["set"], row["train"], row["epochs"], row["method"]),
                          []).append(row)
    print("| backbone | set | n, epochs | method | seeds | F meV/Å | E meV/atom | S GPa | F ÷ native | s/epoch | "
          "÷ native | peak MiB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for key in sorted(groups, key=lambda k: (k[0], k[1], k[2], k[3], METHODS.index(k[4]))):
        backbone, set_name, n, epochs, method = key
        group = groups[key]
        native = groups.get((backbone, set_name, n, epochs, NATIVE))
        f = [r["test"]["forces_mae"] for r in group]
        cells = [backbone, set_name, f"{n}, {epochs}", method, str(len(group)), _ms(f),
                 _ms([r["test"]["energy_mae"] for r in group]), _ms([r["test"]["stress_mae"] for r in group], digits=3)]
        cells.append(f"{np.mean(f) / np.mean([r['test']['forces_mae'] for r in native]):.2f}" if native else "–")
        if "epoch_seconds" in group[0]:
            epoch = np.mean([np.mean(r["epoch_seconds"]) for r in group])
            cells.append(f"{epoch:.1f}")
            cells.append(f"{epoch / np.mean([np.mean(r['epoch_seconds']) for r in native]):.2f}" if native else "–")
            cells.append(f"{np.mean([r['peak_rss_mib'] for r in group]):.0f}")
        else:
            cells += ["–", "–", "–"]
        print("| " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    stages = parser.add_subparsers(dest="stage", required=True)
    runs = stages.add_parser("run")
    runs.add_argument("--sets", nargs="+", default=list(SETS), choices=SETS)
    runs.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    runs.add_argument("--train", type=int, default=40)
    runs.add_argument("--epochs", type=int, default=10)
    runs.add_argument("--batch-size", type=int, default=4, help="the sevenn preset's")
    runs.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    runs.add_argument("--backbone", choices=("sevennet", "chgnet"), default="sevennet")
    stages.add_parser("tables")
    args = parser.parse_args()
    if args.stage == "run":
        run(args.sets, args.methods, args.train, args.epochs, args.batch_size, args.seeds, args.backbone)
    else:
        print_tables()


if __name__ == "__main__":
    main()
