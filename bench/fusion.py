"""Fusion against every single view and the simple fusions, on the shared matminer tasks.

Views of every structure are computed once per task and kept in ``bench/out/fusion/<task>.npz``: the
graph (SevenNet-0's mean-pooled features, frozen), the composition (Magpie, 132 statistics), the
structure (20 geometry statistics) and the text (robocrys + MiniLM, 384; run ``bench/describe_tasks.py``
first, robocrys takes a second or two a structure). On each split (the published ``splits/seed*.json``, the training part cut to ``--n-train``
as ``moma_matminer.py`` cuts it, or matbench's 5-fold protocol for jarvis_2d_exfoliation), test MAE of:

- ``mean``: the training mean;
- ``graph``: the graph model: the ridge probe of the frozen features (LP; the graph-only model a fusion
  head here corrects);
- ``comp_gbm`` / ``comp_rf``: gradient boosting (trees chosen on validation) / a random forest on Magpie;
- ``struct_rf`` / ``comp_struct_rf``: a random forest on the structure statistics / on Magpie and them;
- ``text_ridge``: ridge on the MiniLM embedding;
- ``graph_comp_ridge``: ridge on the graph features and Magpie side by side (standardised, α by
  leave-one-out), the baseline that beat the fusion on a held-out task;
- ``concat_ridge`` / ``concat_mlp``: ridge / a one-hidden-layer MLP on the three views concatenated;
- ``stacking``: a non-negative linear blend of the graph, composition-GBM, structure-RF and text
  predictions, fitted on their out-of-fold predictions;
- ``hub`` (a view, ``--views ... hub``): each starter-hub module's prediction of its own property, cached
  by ``bench/hub_view.py``;
- ``fused``: ase-moma's fusion (three heads, averaged; a forest per view, a joint forest and boosting on
  composition as its experts) over the views on top of the graph model
  (:func:`ase_moma.modalities.fusion_training.fit_heads`, the code ``finetune --modalities`` runs);
  ``fused-comp``, ``fused-stru``, ``fused-text``: the same without one view (the drop-one ablation,
  skipped with ``--no-ablation``).

    python bench/fusion.py [--tasks ...] [--seeds 0 1 2] [--n-train 100|0] [--views composition structure text]
    python bench/fusion.py --matbench        # jarvis_2d_exfoliation, KFold(5, shuffle, 18012019)
    python bench/fusion.py ... --baselines-from REPORT   # take REPORT's baselines that read the same views
    python bench/fusion.py ... --no-fusion               # the baselines alone
    python bench/fusion.py ... --fixed-gates             # the fusion with every gate held at 1/V

Each fused row records what each term of the correction (a view's, the constant, the interaction) moved
the test predictions by and how much each gate varied over the test structures; REPORT.terms.png draws
the former per task.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import sys
import time
import warnings
from pathlib import Path

import ase.io
import numpy as np
import torch

from ase_moma.labelled_data import load_task_data
from ase_moma.modalities.fused_model import Views, fuse_members
from ase_moma.modalities.fusion_head import GRAPH
from ase_moma.modalities.fusion_training import OOF_FOLDS, FusionConfig, fit_heads
from ase_moma.probe import fit_ridge_probe

sys.path.insert(0, str(Path(__file__).parent))  # moma_matminer's published figures

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "matminer"
MATBENCH_SEED = 18012019  # matbench's KFold random_state
VIEWS = ("composition", "structure", "text", "hub")  # the non-graph views, in the order the tables list them
BASELINE_READS = {"mean": (), "graph": (), "comp_gbm": ("composition",), "comp_rf": ("composition",),
                  "struct_rf": ("structure",), "comp_struct_rf": ("composition", "structure"), "text_ridge": ("text",),
                  "graph_comp_ridge": ("composition",), "concat_ridge": None, "concat_mlp": None,
                  "stacking": None}  # the non-graph views each reads; None: all
PUBLISHED = {"jarvis_2d_exfoliation": {"ALIGNN": 43.4, "MODNet": 33.2, "CrabNet": 45.6, "CGCNN (matbench)": 49.2,
                                       "RF-SCM/Magpie": 50.0}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--tasks", nargs="+")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--n-train", type=int, default=100, help="0: the whole training split")
    parser.add_argument("--views", nargs="+", default=["composition", "structure", "text"], choices=VIEWS)
    parser.add_argument("--no-ablation", action="store_true", help="skip the drop-one-view fusions (a third of the time)")
    parser.add_argument("--no-fusion", action="store_true", help="fit the baselines only")
    parser.add_argument("--fixed-gates", action="store_true", help="fusion with the gates held at 1/V (the ablation "
                                                                  "of learned per-structure gates)")
    parser.add_argument("--matbench", action="store_true", help="jarvis_2d_exfoliation with matbench's 5 folds")
    parser.add_argument("--cache", type=Path, default=Path("bench/out/fusion"))
    parser.add_argument("--descriptions", type=Path, default=Path("bench/out/descriptions"))
    parser.add_argument("-o", "--output", type=Path, help="JSON report (default: CACHE/report_<settings>.json)")
    parser.add_argument("--report", type=Path, help="print the tables of a saved report and stop")
    parser.add_argument("--baselines-from", type=Path,
                        help="a saved report of the same splits: take from it every baseline's test MAE that reads "
                             "the same views (their code is seeded and deterministic); fit the rest and the fusions")
    args = parser.parse_args()
    if args.report:
        rows = json.loads(args.report.read_text())["rows"]
        print_table(rows, json.loads((args.data / "tasks.json").read_text()))
        print(f"terms: {plot_terms(rows, json.loads((args.data / 'tasks.json').read_text()), args.report.with_suffix('.terms.png'))}")
        return
    if not (args.data / "tasks.json").is_file():
        parser.error(f"real data not found at {args.data}")
    tasks = json.loads((args.data / "tasks.json").read_text())
    names = ["jarvis_2d_exfoliation"] if args.matbench else (args.tasks or sorted(tasks, key=lambda t: tasks[t]["n"]))
    args.cache.mkdir(parents=True, exist_ok=True)
    saved = json.loads(args.baselines_from.read_text()) if args.baselines_from else None
    earlier = {(row["task"], row["seed"], row["n_train"]): row for row in saved["rows"]} if saved else None
    rows = []
    for task in names:
        views = task_views(args.data, task, tasks[task], args.views, args.cache, args.descriptions)
        splits = matbench_splits(views) if args.matbench else [
            published_split(args.data, task, tasks[task], seed, args.n_train or None) for seed in args.seeds]
        for seed, split in enumerate(splits) if args.matbench else zip(args.seeds, splits):
            key = (task, seed, len(split["train"]))
            if earlier is not None and key not in earlier:
                parser.error(f"{args.baselines_from} has no row for {task}, split {seed}, {key[2]} training structures")
            baselines = None if earlier is None else reusable(earlier[key], saved["settings"]["views"], args.views)
            row = {"task": task, "seed": seed, "n_train": key[2],
                   **evaluate(views, split, seed, args.views, not args.no_ablation, baselines, not args.no_fusion,
                                 FusionConfig(learned_gates=not args.fixed_gates))}
            rows.append(row)
            print(json.dumps(row), flush=True)
    label = "matbench" if args.matbench else f"n{args.n_train}"
    output = args.output or args.cache / f"report_{label}_{'_'.join(args.views)}.json"
    output.write_text(json.dumps({"settings": {k: str(v) for k, v in vars(args).items()}, "rows": rows}, indent=1))
    print_table(rows, tasks)
    if not args.no_fusion:
        print(f"terms: {plot_terms(rows, tasks, output.with_suffix('.terms.png'))}")


def task_views(data: Path, task: str, info: dict, names: list[str], cache: Path, descriptions: Path) -> dict:
    """``{"targets": (N,), "graph": (N, G), name: (N, F), name + "_present": (N,)}`` for every frame of the task."""
    path = cache / f"{task}.npz"
    stored = dict(np.load(path)) if path.is_file() else {}
    frames = ase.io.read(data / info["file"], ":")
    wanted = [GRAPH, *names]
    if all(name in stored for name in wanted):
        return stored
    stored["targets"] = np.array([atoms.info["target"] for atoms in frames])
    stored["row"] = np.array([atoms.info.get("row", index) for index, atoms in enumerate(frames)])
    for name in wanted:
        if name in stored:
            continue
        start = time.perf_counter()
        if name == "hub":
            raise SystemExit(f"{path} has no hub view: run bench/hub_view.py first")
        if name == GRAPH:
            from ase_moma import load_backbone

            stored[name] = load_backbone("sevennet", device="cpu").embed(frames).double().numpy()
            stored[name + "_present"] = np.ones(len(frames), dtype=bool)
        else:
            encoded = encoder(name, descriptions).encode(frames)
            stored[name], stored[name + "_present"] = encoded.features, encoded.present
        print(f"{task}: {name} view of {len(frames)} structures in {time.perf_counter() - start:.0f} s "
              f"({int((~stored[name + '_present']).sum())} missing)", flush=True)
        np.savez(path, **stored)
    return stored


def encoder(name: str, descriptions: Path):
    from ase_moma.modalities import TextModality
    from ase_moma.modalities.registry import build_modality

    return TextModality(cache=descriptions) if name == "text" else build_modality(name)


def reusable(row: dict, earlier_views: str, views: list[str]) -> dict:
    """The baselines of a saved report's ``row`` that read the same views now as then (``earlier_views``: the
    report's ``settings["views"]``, as saved): a single view's baseline when that view was there, a baseline
    over every view only when the views are the same. The rest are fitted again."""
    before = set(ast.literal_eval(earlier_views))
    every = set(views) == before
    return {name: value for name, value in row.items()
            if name in BASELINE_READS and (every if BASELINE_READS[name] is None else set(BASELINE_READS[name]) <= before)}


def published_split(data: Path, task: str, info: dict, seed: int, n_train: int | None) -> dict:
    """Frame positions of the published split ``seed``, the training part cut as moma_matminer.py cuts it."""
    parts = load_task_data(data / info["file"], "target", data / "splits" / f"seed{seed}.json", task, seed=seed,
                           max_train=n_train)
    return {"train": np.array(parts.train.indices), "val": np.array(parts.val.indices),
            "test": np.array(parts.test.indices)}


def matbench_splits(views: dict) -> list[dict]:
    """matbench's folds: KFold(5, shuffle=True, random_state=18012019) over the rows in matbench's order;
    a tenth of each training fold (seeded) is held for validation."""
    from sklearn.model_selection import KFold

    order = np.argsort(views["row"], kind="stable")
    splits = []
    for fold, (train, test) in enumerate(KFold(5, shuffle=True, random_state=MATBENCH_SEED).split(order)):
        train = np.random.default_rng(fold).permutation(order[train])
        cut = len(train) // 10
        splits.append({"train": train[cut:], "val": train[:cut], "test": order[test]})
    return splits


def evaluate(views: dict, split: dict, seed: int, wanted: list[str], ablation: bool = True,
             baselines: dict | None = None, fusion: bool = True, config: FusionConfig | None = None) -> dict:
    """Test MAE of every method on one split, reading the ``wanted`` views (``ablation``: with the drop-one-view
    fusions; ``baselines``: baselines' test MAE already measured, not fitted again; ``fusion``: False for the
    baselines alone; ``config``: the fusion's settings, seeded ``seed``)."""
    config = config or FusionConfig()
    y = {part: views["targets"][index] for part, index in split.items()}
    names = [name for name in VIEWS if name in wanted]
    x = {part: {name: views[name][index] for name in (GRAPH, *names)} for part, index in split.items()}
    present = {part: {name: views[name + "_present"][index] for name in names} for part, index in split.items()}
    graph = fit_ridge_probe(x["train"][GRAPH], y["train"])
    graph_prediction = {part: graph.predict(x[part][GRAPH]) for part in split}
    result = baseline_maes(x, y, names, graph_prediction, seed, baselines or {})
    drops = [(f"fused-{name[:4]}", [n for n in names if n != name]) for name in names] if ablation else []
    for label, used in (("fused", names), *drops) if fusion else ():
        if not used and label != "fused":
            continue
        result[label], record = fused(x, present, y, graph_prediction, used, dataclasses.replace(config, seed=seed))
        if label == "fused":
            result["fused_kept"] = record["kept"]
            result["fused_gates"] = record["val_gates_mean"]
            result["fused_start"] = [member["start"]["steps"] for member in record["members"]]
            result["fused_members"] = [{k: member[k] for k in ("kept", "val_mae")} for member in record["members"]]
            result["fused_val"] = record["val_mae"]
            result["fused_test_terms"] = record.get("test_terms")
    return result


def baseline_maes(x: dict, y: dict, names: list[str], graph_prediction: dict, seed: int, known: dict) -> dict:
    """Test MAE of every baseline over the ``names`` views on one split (``x[part][view]``, ``y[part]``, the graph
    probe's predictions), in BASELINE_READS order; those in ``known`` are taken from it, not fitted."""
    mae = lambda prediction: float(np.mean(np.abs(prediction - y["test"])))  # noqa: E731
    wanted = [name for name, reads in BASELINE_READS.items() if reads is None or set(reads) <= set(names)]
    missing = set(wanted) - set(known)
    split = list(y)
    result = {"mean": mae(np.full(len(y["test"]), y["train"].mean())), "graph": mae(graph_prediction["test"])}
    experts = {"graph": lambda part: graph_prediction[part]}
    if missing & {"comp_gbm", "stacking"} and "composition" in names:
        gbm = gradient_boosting(x["train"]["composition"], y["train"], x["val"]["composition"], y["val"], seed)
        result["comp_gbm"] = mae(gbm.predict(x["test"]["composition"]))
        experts["comp_gbm"] = lambda part: gbm.predict(x[part]["composition"])
    if "comp_rf" in missing:
        result["comp_rf"] = mae(random_forest(x["train"]["composition"], y["train"], seed).predict(x["test"]["composition"]))
    if missing & {"struct_rf", "stacking"} and "structure" in names:
        forest = random_forest(x["train"]["structure"], y["train"], seed)
        result["struct_rf"] = mae(forest.predict(x["test"]["structure"]))
        experts["struct_rf"] = lambda part: forest.predict(x[part]["structure"])
    if "comp_struct_rf" in missing:  # a baseline that sees both views the forests see
        both = {part: np.concatenate([x[part]["composition"], x[part]["structure"]], axis=1) for part in split}
        result["comp_struct_rf"] = mae(random_forest(both["train"], y["train"], seed).predict(both["test"]))
    if missing & {"text_ridge", "stacking"} and "text" in names:
        text = fit_ridge_probe(x["train"]["text"], y["train"])
        result["text_ridge"] = mae(text.predict(x["test"]["text"]))
        experts["text_ridge"] = lambda part: text.predict(x[part]["text"])
    if "graph_comp_ridge" in missing:  # the baseline that won a held-out task against the fusion
        both = {part: np.concatenate([x[part][GRAPH], x[part]["composition"]], axis=1) for part in split}
        result["graph_comp_ridge"] = mae(fit_ridge_probe(both["train"], y["train"]).predict(both["test"]))
    concat = {part: np.concatenate([x[part][name] for name in (GRAPH, *names)], axis=1) for part in split}
    if "concat_ridge" in missing:
        result["concat_ridge"] = mae(fit_ridge_probe(concat["train"], y["train"]).predict(concat["test"]))
    if "concat_mlp" in missing:
        result["concat_mlp"] = mae(mlp(concat["train"], y["train"], concat["test"], seed))
    if "stacking" in missing:
        result["stacking"] = mae(stacking(x, y, names, experts, seed))
    result.update({name: known[name] for name in wanted if name in known})
    return {name: result[name] for name in wanted}


def fused(x: dict, present: dict, y: dict, graph_prediction: dict, names: list[str],
          config: FusionConfig) -> tuple[float, dict]:
    """Test MAE of the fusion head over ``names`` on top of the graph probe, and its record, with (when the
    fusion was kept) ``test_terms``: per term of the correction, its mean |value| on the test structures, and
    per view the spread (standard deviation over test structures) of its gate."""
    def views(part: str) -> Views:
        return Views(torch.as_tensor(graph_prediction[part]),
                     {name: torch.as_tensor(x[part][name]) for name in (GRAPH, *names)},
                     {name: torch.as_tensor(present[part][name]) for name in names}, [{} for _ in y[part]])

    fit = fit_heads(views("train"), y["train"], views("val"), y["val"], config)
    if not fit.members:
        return float(np.mean(np.abs(graph_prediction["test"] - y["test"]))), fit.record
    test = fuse_members(fit.members, views("test"), names)
    fit.record["test_terms"] = {
        "mean_abs": dict(zip(test.names, map(float, np.abs(test.terms).mean(0)))),
        "gate_std": dict(zip(test.names, map(float, test.gates.std(0)))),
        "correction_mean_abs": float(np.abs(test.values - test.graph).mean())}
    return float(np.mean(np.abs(test.values - y["test"]))), fit.record


def gradient_boosting(x, y, x_val, y_val, seed: int):
    """sklearn gradient boosting (depth 3, learning rate 0.05, 80 % subsamples) with its number of trees
    (≤ 1000) chosen on validation: the composition baseline given the same validation data as fusion."""
    from sklearn.ensemble import GradientBoostingRegressor

    model = GradientBoostingRegressor(n_estimators=1000, learning_rate=0.05, max_depth=3, subsample=0.8,
                                      random_state=seed).fit(x, y)
    errors = [np.mean(np.abs(p - y_val)) for p in model.staged_predict(x_val)]
    return GradientBoostingRegressor(n_estimators=int(np.argmin(errors)) + 1, learning_rate=0.05, max_depth=3,
                                     subsample=0.8, random_state=seed).fit(x, y)


def random_forest(x, y, seed: int):
    """matbench's RF baseline: 500 trees, sklearn's other defaults."""
    from sklearn.ensemble import RandomForestRegressor

    return RandomForestRegressor(n_estimators=500, random_state=seed, n_jobs=1).fit(x, y)


def mlp(x, y, x_test, seed: int) -> np.ndarray:
    """One hidden layer of 128, standardised inputs and targets, L2 1e-2, early stopping on 10 % of train."""
    from sklearn.neural_network import MLPRegressor
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(x)
    mean, std = y.mean(), y.std() or 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = MLPRegressor(hidden_layer_sizes=(128,), alpha=1e-2, max_iter=2000, early_stopping=True, random_state=seed)
        model.fit(scaler.transform(x), (y - mean) / std)
    return model.predict(scaler.transform(x_test)) * std + mean


def stacking(x: dict, y: dict, names: list[str], experts: dict, seed: int) -> np.ndarray:
    """Non-negative linear blend (with intercept) of the experts, fitted on their out-of-fold training
    predictions (OOF_FOLDS folds, each expert refitted on the other folds)."""
    from sklearn.linear_model import LinearRegression

    rows = len(y["train"])
    folds = np.random.default_rng(seed).permutation(rows) % OOF_FOLDS
    oof = np.zeros((rows, len(experts)))
    for fold in range(OOF_FOLDS):
        held = folds == fold
        fit, test = {n: v[~held] for n, v in x["train"].items()}, {n: v[held] for n, v in x["train"].items()}
        column = 0
        oof[held, column] = fit_ridge_probe(fit[GRAPH], y["train"][~held]).predict(test[GRAPH])
        if "comp_gbm" in experts:
            column += 1
            oof[held, column] = gradient_boosting(fit["composition"], y["train"][~held], x["val"]["composition"],
                                                  y["val"], seed).predict(test["composition"])
        if "struct_rf" in experts:
            column += 1
            oof[held, column] = random_forest(fit["structure"], y["train"][~held], seed).predict(test["structure"])
        if "text_ridge" in experts:
            column += 1
            oof[held, column] = fit_ridge_probe(fit["text"], y["train"][~held]).predict(test["text"])
    blend = LinearRegression(positive=True).fit(oof, y["train"])
    return blend.predict(np.stack([expert("test") for expert in experts.values()], axis=1))


def plot_terms(rows: list[dict], tasks: dict, path: Path) -> Path:
    """One panel per task: what each term of the fused correction moved the test predictions by (mean
    |term| over the test structures, in the task's unit; mean over the splits that kept the fusion), beside
    the graph-only model's test MAE for scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(row["task"] for row in rows))
    columns = min(5, len(names))
    figure, axes = plt.subplots(-(-len(names) // columns), columns, figsize=(2.6 * columns, 2.4 * -(-len(names) // columns)),
                                squeeze=False)
    for axis, task in zip(axes.flat, names):
        kept = [row["fused_test_terms"] for row in rows if row["task"] == task and row.get("fused_test_terms")]
        terms = list(dict.fromkeys(term for record in kept for term in record["mean_abs"]))
        heights = [np.mean([record["mean_abs"].get(term, 0.0) for record in kept]) for term in terms]
        axis.barh(range(len(terms)), heights, color="tab:blue")
        axis.axvline(np.mean([row["graph"] for row in rows if row["task"] == task]), color="grey", ls="--", lw=1)
        axis.set_yticks(range(len(terms)), [term.replace("composition", "comp.") for term in terms], fontsize=7)
        axis.invert_yaxis()
        axis.set_title(f"{task.replace('jarvis_2d_', '2d_')} ({len(kept)} fused)", fontsize=8)
        axis.set_xlabel(f"mean |term| ({tasks[task]['unit']})", fontsize=7)
        axis.tick_params(axis="x", labelsize=7)
    for axis in list(axes.flat)[len(names):]:
        axis.axis("off")
    figure.suptitle("what each view added to the test predictions (dashed: graph-only test MAE)", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def print_table(rows: list[dict], tasks: dict) -> None:
    """Mean ± std over splits per task and method, the lowest non-trivial mean in bold, published figures beside
    (MoMa paper Table 10 for 100 training structures; its Table 1 on the whole split)."""
    from moma_matminer import PUBLISHED_100_MAE

    methods = [k for k in rows[0] if k not in ("task", "seed", "n_train") and not k.startswith("fused_")]
    few = max(row["n_train"] for row in rows) <= 100
    published = ("JMP-FT (100)", "MoMa (100)") if few else ("CGCNN", "MoMa (Full)")
    print("| task | n_train | " + " | ".join(methods) + " | splits fused < best baseline | " + " | ".join(published) + " |")
    print("|---|---|" + "---|" * (len(methods) + 1 + len(published)))
    for task in dict.fromkeys(row["task"] for row in rows):
        mine = [row for row in rows if row["task"] == task]
        means = {m: np.mean([row[m] for row in mine]) for m in methods}
        best = min(methods[1:], key=means.get)
        baselines = [m for m in methods[1:] if not m.startswith("fused")]
        strongest = min(baselines, key=means.get)  # the baseline with the lowest mean, split by split
        wins = f"{sum(row['fused'] < row[strongest] for row in mine)}/{len(mine)}" if "fused" in means else "–"
        cells = [(f"**{means[m]:.4g} ± {np.std([row[m] for row in mine]):.2g}**" if m == best else
                  f"{means[m]:.4g} ± {np.std([row[m] for row in mine]):.2g}") for m in methods]
        if few:
            figures = PUBLISHED_100_MAE.get(task, ("–", "–"))
        else:
            table = tasks[task].get("moma_table1_test_mae") or {}
            figures = tuple(table.get(name, "–") for name in published)
        print(f"| {task} ({tasks[task]['unit']}) | {mine[0]['n_train']} | " + " | ".join(cells)
              + f" | {wins} | " + " | ".join(str(f) for f in figures) + " |")


if __name__ == "__main__":
    main()
