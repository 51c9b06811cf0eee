"""MoMa's downstream benchmark on the matminer tasks: AMC against its baselines and the published numbers.

For each task of ../shared/data/matminer/tasks.json and each seed's published split:
compose from the hub (default: a verified copy of the starter hub; the composer
leaves out the task's own module) with AMC and the baselines, fine-tune each
result (LP-FT: the head starts as the ridge probe), and report the test MAE
beside two trivial baselines measured on the same training structures —
predicting the training mean, and the ridge probe on the plain backbone's
frozen mean-pooled features — and beside CGCNN, MoE-(18), JMP-FT and MoMa (Full)
from tasks.json, or with 100 training structures beside the paper's 100-sample JMP-FT and
MoMa (its Table 10). Then, on the correlation tasks, fine-tune every module alone
and report Spearman and Pearson correlation between its kNN proxy MAE and its
test MAE (with --correlation-seeds, the mean test MAE over fine-tuning seeds on the
seed-0 split, and how far seeds alone move a module against how far modules
differ). Finally AMC's time on the largest task's full training split, split
into embedding, kNN and solver, with the embedding cache cold and then warm.

--quick (few-shot: 100 training structures, 5 epochs with patience 3) runs on
the 2-core CPU machine; --n-train 0 uses the whole training split; without
--quick the paper's schedule (up to 60 epochs, patience 10) is meant for a GPU.

    python bench/moma_matminer.py --quick [--seeds 0 1 2] [--tasks T ...] [--hub HUB] [-o OUT]

--data runs the same protocol on another task folder of the same layout, e.g. the
transport tasks no hub module has seen, written by bench/unseen_tasks.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.stats import pearsonr, spearmanr

from ase_moma import load_backbone
from ase_moma.compose import DOWNSTREAM, STRATEGIES, compose, finetune_composed
from ase_moma.compose.embeddings import module_embeddings
from ase_moma.hub import Hub
from ase_moma.hub.starter import write_starter_hub
from ase_moma.labelled_data import load_task_data
from ase_moma.probe import fit_ridge_probe
from ase_moma.structures import read_structures

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "matminer"
PUBLISHED = ("CGCNN", "MoE-(18)", "JMP-FT", "MoMa (Full)")
PUBLISHED_100 = ("JMP-FT (100)", "MoMa (100)")
PUBLISHED_100_MAE = {  # MoMa paper, Table 10: test MAE with 100 training samples, mean over five splits
    "expt_eform": (0.273, 0.101),
    "jarvis_2d_dielectric_opt": (3.19, 2.35),
    "jarvis_2d_exfoliation": (54.4, 56.1),
    "jarvis_2d_gap_opt": (0.890, 0.517),
    "mp_elastic_anisotropy": (4.85, 3.79),
    "mp_eps_electronic": (0.260, 0.178),
    "mp_poly_electronic": (3.24, 2.88),
    "mp_poly_total": (6.54, 6.32),
}
CORRELATION_TASKS = ("jarvis_2d_gap_opt", "jarvis_2d_dielectric_opt")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hub", help="a hub (default: a verified copy of the starter hub)")
    parser.add_argument("--data", default=str(DATA), help="a task folder laid out as ../shared/data/matminer "
                        "(tasks.json, the task files, splits/seed*.json), e.g. from bench/unseen_tasks.py")
    parser.add_argument("-o", "--output", default="bench/out/moma_matminer", help="report folder")
    parser.add_argument("--quick", action="store_true", help="100 structures, 5 epochs, patience 3 (CPU)")
    parser.add_argument("--n-train", type=int, help="training structures (default: 100 with --quick, else all; "
                        "0: all)")
    parser.add_argument("--tasks", nargs="*", help="default: every task in tasks.json; none (a bare --tasks): "
                        "only the correlation")
    parser.add_argument("--seeds", nargs="+", type=int, help="default: 0 (quick) or 0-4")
    parser.add_argument("--strategies", nargs="+", default=["amc", "no_hub", "all_average", "best_single"],
                        choices=STRATEGIES)
    parser.add_argument("--correlation-tasks", nargs="*", help=f"default: {' '.join(CORRELATION_TASKS)}")
    parser.add_argument("--correlation-seeds", nargs="+", type=int, default=[0],
                        help="fine-tuning seeds of each module on the seed-0 split (default: 0)")
    parser.add_argument("--no-timing", action="store_true", help="skip the AMC timing on the largest task")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    args = parser.parse_args()

    data = Path(args.data)
    tasks = json.loads((data / "tasks.json").read_text())
    for info in tasks.values():
        info["path"], info["splits"] = data / info["file"], data / "splits"
    names = args.tasks if args.tasks is not None else sorted(tasks, key=lambda t: tasks[t]["n"])
    if args.correlation_tasks is None:
        args.correlation_tasks = [t for t in CORRELATION_TASKS if t in tasks]
    unknown = [t for t in names + args.correlation_tasks if t not in tasks]
    if unknown:
        parser.error(f"unknown tasks {unknown}; tasks.json has {sorted(tasks)}")
    seeds = args.seeds or ([0] if args.quick else [0, 1, 2, 3, 4])
    n_train = args.n_train if args.n_train is not None else (100 if args.quick else 0)
    n_train = n_train or None
    config = dataclasses.replace(DOWNSTREAM, epochs=5, patience=3, batch_size=16, mode="quick") \
        if args.quick else DOWNSTREAM
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="moma_matminer_"))
    hub = Hub(args.hub) if args.hub else write_starter_hub(work / "starter_hub")
    plain = load_backbone(hub.backbone["name"], device=args.device)
    cache = work / "embedding_cache"
    report: dict = {"settings": {"data": str(data), "quick": args.quick, "seeds": seeds, "n_train": n_train,
                                 "config": dataclasses.asdict(config), "hub": str(hub.path),
                                 "modules": hub.names()},
                    "rows": [], "correlation": {}, "timing": None}
    try:
        for task in names:
            features = plain.embed(read_structures(tasks[task]["path"], "task file")).double().numpy()
            for seed in seeds:
                row = probe_baseline(task, tasks[task], seed, n_train, features)
                report["rows"].append(row)
                print(json.dumps(row), flush=True)
                for strategy in args.strategies:
                    row = run(hub, task, tasks[task], seed, strategy, n_train, config, work, cache, args.device)
                    report["rows"].append(row)
                    print(json.dumps(row), flush=True)
        for task in args.correlation_tasks:
            report["correlation"][task] = correlation(hub, task, tasks[task], n_train, config, work, cache,
                                                      args.device, args.correlation_seeds)
            print(task, json.dumps(report["correlation"][task]), flush=True)
        if names and not args.no_timing:
            largest = max(names, key=lambda t: tasks[t]["n"])
            report["timing"] = timing(hub, largest, tasks[largest], work, args.device)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        (output / "report.json").write_text(json.dumps(report, indent=1))
    print_tables(report, tasks)


def probe_baseline(task: str, info: dict, seed: int, n_train: int | None, features: np.ndarray) -> dict:
    """The ridge probe on the plain backbone's frozen features of the same training structures."""
    data = load_task_data(info["path"], "target", info["splits"] / f"seed{seed}.json", task, seed=seed,
                          max_train=n_train)
    probe = fit_ridge_probe(features[data.train.indices], data.train.targets)
    test = np.mean(np.abs(probe.predict(features[data.test.indices]) - data.test.targets))
    return {"task": task, "seed": seed, "strategy": "probe", "test_mae": float(test), "alpha": probe.alpha,
            "test_mae_predict_mean": float(np.mean(np.abs(data.test.targets - data.train.targets.mean()))),
            "unit": info["unit"]}


def other_tasks_modules(hub: Hub, task: str) -> list[str]:
    """Every module not trained on ``task`` (the ones the composer may use)."""
    return [m["name"] for m in hub.modules if m["task"] != task]


def run(hub: Hub, task: str, info: dict, seed: int, strategy: str, n_train: int | None, config,
        work: Path, cache: Path, device: str, modules: list[str] | None = None, plain_fallback: bool = True,
        finetune_seed: int | None = None) -> dict:
    """Compose with ``strategy`` on split ``seed``, fine-tune (seeded by ``finetune_seed``, default ``seed``),
    return test MAE and timings."""
    out = work / f"{task}_{seed}_{strategy}"
    start = time.perf_counter()
    recipe = compose(hub, info["path"], "target", out, split=info["splits"] / f"seed{seed}.json",
                     task=task, seed=seed, n_train=n_train, unit=info["unit"], strategy=strategy,
                     modules=modules, device=device, cache_dir=cache,
                     overwrite=True, progress=False)
    compose_s = time.perf_counter() - start
    meta = finetune_composed(out, dataclasses.replace(config, seed=seed if finetune_seed is None else finetune_seed),
                             device=device, progress=False,
                             plain_fallback=plain_fallback)
    shutil.rmtree(out)
    return {"task": task, "seed": seed, "strategy": strategy, "test_mae": meta["metrics"]["test_mae"],
            "val_mae": meta["metrics"]["val_mae"], "start_val_mae": meta["training"]["start_val_mae"],
            "test_mae_predict_mean": meta["metrics"]["test_mae_predict_mean"],
            "weights": {m["name"]: round(m["weight"], 4) for m in recipe["modules"] if m["weight"] > 0},
            "proxy_mae": {m["name"]: m["proxy_mae"] for m in recipe["modules"]},
            "kept": meta["composition"]["kept"], "epochs_run": meta["training"]["epochs_run"], "compose_s": compose_s,
            "finetune_s": time.perf_counter() - start - compose_s, "unit": info["unit"]}


def correlation(hub: Hub, task: str, info: dict, n_train: int | None, config, work: Path, cache: Path,
                device: str, finetune_seeds: list[int]) -> dict:
    """Each module fine-tuned alone (no plain-probe fallback) on the seed-0 split, once per fine-tuning seed: its
    proxy MAE against its mean test MAE. A seed can shift every module's test MAE alike, which leaves the ranking
    the correlation measures untouched, so ``seed_std`` is the mean over modules of the standard deviation over
    seeds after each seed's mean over modules is removed; ``module_std`` is the standard deviation over modules of
    the mean, and ``seed_rank_spearman`` the mean Spearman correlation between two seeds' test MAEs. When the
    first is well below the second and the third is near 1, the modules' ranking is reproducible, and a proxy
    that misses it is wrong rather than unlucky."""
    modules = other_tasks_modules(hub, task)
    if len(modules) < 3:
        raise SystemExit(f"{hub.path} has {len(modules)} modules besides {task}'s own; a correlation over modules "
                         "needs at least 3")
    runs = []
    for name in modules:  # printed as they come, so that a run cut short still shows what it finished
        runs.append([run(hub, task, info, 0, "amc", n_train, config, work, cache, device, modules=[name],
                         plain_fallback=False, finetune_seed=fs) for fs in finetune_seeds])
        print(f"  {task} {name}: proxy MAE {runs[-1][0]['proxy_mae'][name]:.4g}, test MAE "
              + ", ".join(f"{one['test_mae']:.4g}" for one in runs[-1]), flush=True)
    proxy = [r[0]["proxy_mae"][name] for r, name in zip(runs, modules)]
    tests = np.array([[one["test_mae"] for one in r] for r in runs])
    test = tests.mean(axis=1).tolist()
    pairs = list(itertools.combinations(range(len(finetune_seeds)), 2))
    rank_agreement = float(np.mean([spearmanr(tests[:, a], tests[:, b]).statistic for a, b in pairs])) if pairs \
        else float("nan")
    return {"modules": modules, "finetune_seeds": finetune_seeds, "proxy_mae": proxy, "test_mae": test,
            "test_mae_per_seed": tests.tolist(), "seed_std": float((tests - tests.mean(axis=0)).std(axis=1).mean()),
            "module_std": float(np.std(test)), "seed_rank_spearman": rank_agreement,
            "spearman": float(spearmanr(proxy, test).statistic), "pearson": float(pearsonr(proxy, test).statistic),
            **ridge_proxy(hub, modules, task, info, n_train, test, cache, device)}


def ridge_proxy(hub: Hub, modules: list[str], task: str, info: dict, n_train: int | None, test: list[float],
                cache: Path, device: str) -> dict:
    """A second proxy beside the kNN one, for comparison: the leave-one-out MAE of the ridge probe on each
    module's frozen embeddings of the same training structures (the head LP-FT starts from), and its Spearman and
    Pearson correlation with ``test``. The embeddings come from the cache the compositions filled."""
    train = load_task_data(info["path"], "target", info["splits"] / "seed0.json", task, seed=0,
                           max_train=n_train).train
    embeddings = module_embeddings(hub, modules, train.frames, device=device, cache_dir=cache, progress=False)
    ridge = [fit_ridge_probe(embeddings[name], train.targets).loo_mae for name in modules]
    return {"ridge_loo_mae": ridge, "ridge_spearman": float(spearmanr(ridge, test).statistic),
            "ridge_pearson": float(pearsonr(ridge, test).statistic)}


def timing(hub: Hub, task: str, info: dict, work: Path, device: str) -> dict:
    """AMC on the whole training split of ``task``: embedding, kNN, solver seconds, cold then warm cache."""
    cache = work / "timing_cache"
    result = {"task": task}
    for state in ("cold", "warm"):
        recipe = compose(hub, info["path"], "target", work / f"timing_{state}",
                         split=info["splits"] / "seed0.json", task=task, device=device, cache_dir=cache,
                         overwrite=True, progress=False)
        result[state] = {k: round(v, 3) for k, v in recipe["timings"].items()}
        result["train_size"] = recipe["task"]["train_size"]
    return result


def print_tables(report: dict, tasks: dict) -> None:
    """The MAE table (when strategies ran), the proxy correlations and AMC's timing."""
    if report["rows"]:
        print_mae_table(report, tasks)
    for task, result in report["correlation"].items():
        print(f"\nproxy vs fine-tuned test MAE on {task}: Spearman {result['spearman']:+.3f}, "
              f"Pearson {result['pearson']:+.3f} over {len(result['modules'])} modules; the ridge probe's "
              f"leave-one-out MAE as proxy: Spearman {result['ridge_spearman']:+.3f}, "
              f"Pearson {result['ridge_pearson']:+.3f}")
        if len(result["finetune_seeds"]) > 1:
            print(f"  test MAE averaged over fine-tuning seeds {result['finetune_seeds']}; spread over seeds "
                  f"{result['seed_std']:.4g} (each seed's common shift removed), over modules "
                  f"{result['module_std']:.4g}; Spearman between seeds {result['seed_rank_spearman']:+.3f}")
    timing_result = report["timing"]
    if timing_result:
        print(f"\nAMC time on {timing_result['task']} (M = {timing_result['train_size']}):")
        for state in ("cold", "warm"):
            print(f"  cache {state}: " + ", ".join(f"{k} {v} s" for k, v in timing_result[state].items()))


def print_mae_table(report: dict, tasks: dict) -> None:
    """Test MAE per task, mean ± std over seeds, and how often AMC beats no_hub and every method the probe."""
    strategies = list(dict.fromkeys(r["strategy"] for r in report["rows"]))
    few_shot = report["settings"]["n_train"] == 100
    columns = PUBLISHED_100 if few_shot else PUBLISHED
    print("\n| task | unit | M | " + " | ".join(strategies) + " | mean-pred | "
          + " | ".join(columns) + " |")
    print("|" + "---|" * (4 + len(strategies) + len(columns)))
    means: dict[str, dict[str, float]] = {}
    for task in dict.fromkeys(r["task"] for r in report["rows"]):
        rows = [r for r in report["rows"] if r["task"] == task]
        means[task] = {s: float(np.mean([r["test_mae"] for r in rows if r["strategy"] == s])) for s in strategies}
        cells = []
        for s in strategies:
            values = [r["test_mae"] for r in rows if r["strategy"] == s]
            cells.append(f"{np.mean(values):.4g} ± {np.std(values):.2g}" if len(values) > 1 else f"{values[0]:.4g}")
        if few_shot:
            published = dict(zip(PUBLISHED_100, PUBLISHED_100_MAE.get(task, ())))
        else:
            published = tasks[task]["moma_table1_test_mae"] or {}
        print(f"| {task} | {tasks[task]['unit']} | {report['settings']['n_train'] or 'all'} | "
              + " | ".join(cells) + f" | {np.mean([r['test_mae_predict_mean'] for r in rows]):.4g} | "
              + " | ".join(str(published.get(p, "–")) for p in columns) + " |")
    n = len(means)
    if "amc" in strategies and "no_hub" in strategies:
        wins = sum(m["amc"] < m["no_hub"] for m in means.values())
        print(f"\nAMC better than no_hub on {wins} of {n} tasks (mean over seeds)")
    if "probe" in strategies:
        for s in strategies:
            if s != "probe":
                print(f"{s} at or below the plain-backbone ridge probe on "
                      f"{sum(m[s] <= m['probe'] for m in means.values())} of {n} tasks")


if __name__ == "__main__":
    main()
