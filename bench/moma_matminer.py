"""MoMa's downstream benchmark on the matminer tasks: AMC against its baselines and the published numbers.

For each task of ../shared/data/matminer/tasks.json and each seed's published split:
compose from the hub (upstream modules plus, leave-one-task-out, any matminer
modules of the other tasks; build them with `bench/build_hub.py --matminer`)
with AMC and every baseline, fine-tune each result with a fresh head, and
report the test MAE beside CGCNN, MoE-(18), JMP-FT and MoMa (Full) from
tasks.json. Then, on the correlation tasks, fine-tune every module alone and
report Spearman and Pearson correlation between its kNN proxy MAE and its test
MAE. Finally AMC's time on the largest task's full training split, split into
embedding, kNN and solver, with the embedding cache cold and then warm.

--quick (one seed, training split capped at 160 structures, 3 epochs) runs on
the 2-core CPU machine; the default runs the paper's schedule (all five seeds,
whole training splits, up to 60 epochs, patience 10) and is meant for a GPU.

    python bench/moma_matminer.py --hub bench/out/hub --quick [--tasks T ...] [-o bench/out/moma_matminer]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.stats import pearsonr, spearmanr

from ase_moma.compose import DOWNSTREAM, STRATEGIES, compose, finetune_composed
from ase_moma.hub import Hub

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "matminer"
PUBLISHED = ("CGCNN", "MoE-(18)", "JMP-FT", "MoMa (Full)")
CORRELATION_TASKS = ("jarvis_2d_gap_opt", "jarvis_2d_dielectric_opt")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hub", default="bench/out/hub", help="hub built by bench/build_hub.py")
    parser.add_argument("-o", "--output", default="bench/out/moma_matminer", help="report folder")
    parser.add_argument("--quick", action="store_true", help="one seed, 160 structures, 3 epochs (CPU)")
    parser.add_argument("--tasks", nargs="+", help="default: every task in tasks.json")
    parser.add_argument("--seeds", nargs="+", type=int, help="default: 0 (quick) or 0-4")
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES)
    parser.add_argument("--correlation-tasks", nargs="*", default=list(CORRELATION_TASKS))
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    args = parser.parse_args()

    tasks = json.loads((DATA / "tasks.json").read_text())
    names = args.tasks or sorted(tasks, key=lambda t: tasks[t]["n"])
    unknown = [t for t in names if t not in tasks]
    if unknown:
        parser.error(f"unknown tasks {unknown}; tasks.json has {sorted(tasks)}")
    seeds = args.seeds or ([0] if args.quick else [0, 1, 2, 3, 4])
    n_train = 160 if args.quick else None
    config = dataclasses.replace(DOWNSTREAM, epochs=3, batch_size=16, mode="quick") if args.quick else DOWNSTREAM
    hub = Hub(args.hub)
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="moma_matminer_"))
    cache = work / "embedding_cache"
    report: dict = {"settings": {"quick": args.quick, "seeds": seeds, "n_train": n_train,
                                 "config": dataclasses.asdict(config), "hub": str(hub.path),
                                 "modules": hub.names()},
                    "rows": [], "correlation": {}, "timing": None}
    try:
        for task in names:
            for seed in seeds:
                for strategy in args.strategies:
                    row = run(hub, task, tasks[task], seed, strategy, n_train, config, work, cache, args.device)
                    report["rows"].append(row)
                    print(json.dumps(row), flush=True)
        for task in args.correlation_tasks:
            report["correlation"][task] = correlation(hub, task, tasks[task], n_train, config, work, cache,
                                                      args.device)
            print(task, json.dumps(report["correlation"][task]), flush=True)
        largest = max(names, key=lambda t: tasks[t]["n"])
        report["timing"] = timing(hub, largest, tasks[largest], work, args.device)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        (output / "report.json").write_text(json.dumps(report, indent=1))
    print_tables(report, tasks)


def modules_for(hub: Hub, task: str) -> list[str]:
    """Leave one task out: every module except those trained on ``task``."""
    return [m["name"] for m in hub.modules if m["task"] != task]


def run(hub: Hub, task: str, info: dict, seed: int, strategy: str, n_train: int | None, config,
        work: Path, cache: Path, device: str, modules: list[str] | None = None) -> dict:
    """Compose with ``strategy``, fine-tune, return test MAE and timings."""
    out = work / f"{task}_{seed}_{strategy}"
    start = time.perf_counter()
    recipe = compose(hub, DATA / info["file"], "target", out, split=DATA / "splits" / f"seed{seed}.json",
                     task=task, seed=seed, n_train=n_train, unit=info["unit"], strategy=strategy,
                     modules=modules or modules_for(hub, task), device=device, cache_dir=cache,
                     overwrite=True, progress=False)
    compose_s = time.perf_counter() - start
    meta = finetune_composed(out, dataclasses.replace(config, seed=seed), device=device, progress=False)
    shutil.rmtree(out)
    return {"task": task, "seed": seed, "strategy": strategy, "test_mae": meta["metrics"]["test_mae"],
            "val_mae": meta["metrics"]["val_mae"], "test_mae_predict_mean": meta["metrics"]["test_mae_predict_mean"],
            "weights": {m["name"]: round(m["weight"], 4) for m in recipe["modules"] if m["weight"] > 0},
            "proxy_mae": {m["name"]: m["proxy_mae"] for m in recipe["modules"]},
            "epochs_run": meta["training"]["epochs_run"], "compose_s": compose_s,
            "finetune_s": time.perf_counter() - start - compose_s, "unit": info["unit"]}


def correlation(hub: Hub, task: str, info: dict, n_train: int | None, config, work: Path, cache: Path,
                device: str) -> dict:
    """Each module fine-tuned alone: its proxy MAE against its test MAE (seed 0)."""
    rows = [run(hub, task, info, 0, "amc", n_train, config, work, cache, device, modules=[name])
            for name in modules_for(hub, task)]
    proxy = [next(iter(r["proxy_mae"].values())) for r in rows]
    test = [r["test_mae"] for r in rows]
    return {"modules": [next(iter(r["proxy_mae"])) for r in rows], "proxy_mae": proxy, "test_mae": test,
            "spearman": float(spearmanr(proxy, test).statistic), "pearson": float(pearsonr(proxy, test).statistic)}


def timing(hub: Hub, task: str, info: dict, work: Path, device: str) -> dict:
    """AMC on the whole training split of ``task``: embedding, kNN, solver seconds, cold then warm cache."""
    cache = work / "timing_cache"
    result = {"task": task}
    for state in ("cold", "warm"):
        recipe = compose(hub, DATA / info["file"], "target", work / f"timing_{state}",
                         split=DATA / "splits" / "seed0.json", task=task, modules=modules_for(hub, task),
                         device=device, cache_dir=cache, overwrite=True, progress=False)
        result[state] = {k: round(v, 3) for k, v in recipe["timings"].items()}
        result["train_size"] = recipe["task"]["train_size"]
    return result


def print_tables(report: dict, tasks: dict) -> None:
    strategies = list(dict.fromkeys(r["strategy"] for r in report["rows"]))
    print("\n| task | unit | M | " + " | ".join(strategies) + " | mean-pred | "
          + " | ".join(PUBLISHED) + " |")
    print("|" + "---|" * (4 + len(strategies) + len(PUBLISHED)))
    for task in dict.fromkeys(r["task"] for r in report["rows"]):
        rows = [r for r in report["rows"] if r["task"] == task]
        cells = [f"{np.mean([r['test_mae'] for r in rows if r['strategy'] == s]):.4g}" for s in strategies]
        published = tasks[task]["moma_table1_test_mae"] or {}
        print(f"| {task} | {tasks[task]['unit']} | {report['settings']['n_train'] or 'all'} | "
              + " | ".join(cells) + f" | {np.mean([r['test_mae_predict_mean'] for r in rows]):.4g} | "
              + " | ".join(str(published.get(p, "–")) for p in PUBLISHED) + " |")
    for task, result in report["correlation"].items():
        print(f"\nproxy vs fine-tuned test MAE on {task}: Spearman {result['spearman']:+.3f}, "
              f"Pearson {result['pearson']:+.3f} over {len(result['modules'])} modules")
    timing_result = report["timing"]
    if timing_result:
        print(f"\nAMC time on {timing_result['task']} (M = {timing_result['train_size']}):")
        for state in ("cold", "warm"):
            print(f"  cache {state}: " + ", ".join(f"{k} {v} s" for k, v in timing_result[state].items()))


if __name__ == "__main__":
    main()
