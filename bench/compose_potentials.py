"""Composable potentials, measured: a hub of sparse potential modules, composed for a set none of them saw.

Stages (each writes under ``--output``, default bench/out/compose_potentials, and later stages reuse
what earlier ones wrote):

``modules``  fine-tunes SevenNet-0 on each DFT set of ../shared/data/mlip with ``ase-moma finetune``'s
             own code (``finetune_potential``) and adds each ``OUT/module`` to one hub. Per set: at most
             ``MODULE_FRAMES`` training frames (seeded), ``MODULE_VALID`` validation frames,
             batch 8, ``--module-steps`` optimiser steps.
``loo``      leave one set out: for each held-out set, compose a start from the other sets' modules
             (``amc`` with each proxy, ``all_average``, ``best_single``) and from nothing (``no_hub``,
             the pretrained potential); measure each start's zero-shot error on the set's test frames,
             then fine-tune each start with ``sparse`` on 10 and 40 of the set's frames for the same
             number of steps, 3 seeds, and measure the test error again.
``merge``    merged skills: two modules of one method trained on different chemistries merged with weight
             ½ each (plain sum and sign consensus), each chemistry's test error against its own module
             alone and against one model fine-tuned on the union of both training sets.
``tables``   prints the Markdown tables of every report found.

Splits: mlearn sets use their own test file and split the training file 90/10 (seed 0); InP and
alexandria_val (the alloy set: relaxation snapshots over 84 elements) are split 80/10/10 (seed 0).
Every test set is capped at ``TEST_FRAMES`` frames (seeded) for the modules; the leave-one-out runs score
a seeded ``FEW_TEST`` of them, the same frames for every start, and validate on ``FEW_VALID`` frames.

    python bench/compose_potentials.py modules [--sets ...] [--methods sparse-L ...] [--union SET SET]
    python bench/compose_potentials.py loo [--sets ...] [--sizes 10 40] [--seeds 0 1 2] [--steps 15] [--threads 1]
                                           [--merge sum|sign_consensus] [--starts ...] [--no-tune]
    python bench/compose_potentials.py merge [--pairs mlearn_Si:mlearn_Ge ...] [--methods ...]
    python bench/compose_potentials.py tables
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import ase.io
import numpy as np

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "mlip"
SETS = ("mlearn_Si", "mlearn_Ge", "mlearn_Li", "mlearn_Mo", "InP", "alexandria_val")
METHODS = {"sparse-L": ("sparse", {"preset": "L"}), "sparse-H": ("sparse", {"preset": "H"}), "lora": ("lora", {}),
           "full": ("full", {})}  # label: (method, its options)
MODULE_FRAMES, MODULE_VALID, TEST_FRAMES, FEW_VALID, FEW_TEST = 120, 10, 25, 5, 15


def set_parts(name: str) -> dict[str, list]:
    """train/valid/test frames of one set (fixed split, seed 0; the test part capped at TEST_FRAMES)."""
    from ase_moma.finetune.potential_data import split_frames

    if name.startswith("mlearn_"):
        train, valid, _ = split_frames(ase.io.read(DATA / f"{name}_training.extxyz", ":"), (0.9, 0.1, 0.0), seed=0)
        test = ase.io.read(DATA / f"{name}_test.extxyz", ":")
    else:
        train, valid, test = split_frames(ase.io.read(DATA / f"{name}.extxyz", ":"), (0.8, 0.1, 0.1), seed=0)
    return {"train": train, "valid": valid, "test": _sample(test, TEST_FRAMES, seed=0)}


def _sample(frames: list, count: int, seed: int) -> list:
    """``count`` frames of ``frames`` drawn without replacement (seeded), in their original order."""
    if len(frames) <= count:
        return list(frames)
    keep = np.sort(np.random.default_rng(seed).permutation(len(frames))[:count])
    return [frames[i] for i in keep]


def module_name(set_name: str, method: str) -> str:
    """The hub name of a set's module (a union of sets ``A+B`` is named ``A.B``: hub names take no '+')."""
    return f"{set_name.replace('+', '.')}-{method}"


def train_modules(out: Path, sets: list[str], methods: list[str], steps: int, union: list[str] | None = None) -> None:
    """Fine-tune a module per (set, method) and add it to ``out/hub``; modules already there are kept.

    union: also train on the union of these sets' module frames (the merged-skills baseline), named
    ``A+B-method``."""
    from ase_moma.finetune import FinetuneConfig
    from ase_moma.finetune.methods import method_options
    from ase_moma.finetune.pipeline import finetune_potential
    from ase_moma.hub import Hub
    from ase_moma.loading import load_backbone

    hub_path = out / "hub"
    hub = Hub(hub_path) if (hub_path / "hub.json").is_file() else Hub.create(hub_path, load_backbone("sevennet"))
    jobs = [(s,) for s in sets] + ([tuple(union)] if union else [])
    for names in jobs:
        parts = [set_parts(name) for name in names]
        train = [a for p in parts for a in _sample(p["train"], MODULE_FRAMES // len(names), seed=0)]
        valid = [a for p in parts for a in _sample(p["valid"], MODULE_VALID // len(names), seed=0)]
        test = [a for p in parts for a in p["test"]]
        for label in methods:
            name = module_name("+".join(names), label)
            if name in hub.names():
                print(f"{name}: in the hub already", flush=True)
                continue
            method, settings = METHODS[label]
            config = FinetuneConfig(method=method, options=method_options(method, **settings), batch_size=8, epochs=1000, patience=1000,
                                    max_steps=steps, seed=0)
            start = time.perf_counter()
            tuned = out / "tuned" / name
            record = finetune_potential("sevennet", train, valid, tuned, config, test=test, name=name,
                                        progress=False, overwrite=True)
            hub.add(tuned / "module", name=name, overwrite=True)
            test_metrics = record["metrics"]["test"]
            print(f"{name}: {len(train)} frames, {record['result']['steps']} steps in "
                  f"{time.perf_counter() - start:.0f} s; test E {test_metrics['energy_mae']:.2f} meV/atom, "
                  f"F {test_metrics['forces_mae']:.1f} meV/Å, S {test_metrics['stress_mae']:.3f} GPa; "
                  f"{100 * record['path_weights_updated']['fraction']:.2f} % of path weights moved", flush=True)


STARTS = (("no_hub", "errors"), ("amc", "errors"), ("amc", "knn"), ("all_average", "errors"),
          ("best_single", "errors"))
TUNED_STARTS = ("no_hub", "amc", "all_average", "best_single")
"""Starts fine-tuned after composing (the kNN-weighted AMC start is scored zero-shot only: its weights are
the proxy comparison, and fine-tuning it would cost a fifth more)."""


def start_label(strategy: str, proxy: str) -> str:
    return strategy if proxy == "errors" else f"{strategy}-{proxy}"


def leave_one_out(out: Path, sets: list[str], sizes: list[int], seeds: list[int], steps: int,
                  merge: str, tune: bool = True, starts: tuple = STARTS) -> None:
    """For each held-out set: compose starts from the other sets' sparse-L modules on n of its frames, score
    them zero-shot on its test frames, fine-tune each for ``steps`` steps, score again. One JSON row per
    (set, n, seed, start) is appended to ``out/loo_<merge>.jsonl`` as it finishes; rows already there are
    skipped. tune: fine-tune the starts (False: zero-shot only, e.g. to compare merges)."""
    from ase_moma.compose.potential import compose_potential, potential_candidates
    from ase_moma.finetune import FinetuneConfig
    from ase_moma.finetune.pipeline import finetune_potential
    from ase_moma.finetune.potential_data import read_potential_set
    from ase_moma.hub import Hub

    hub = Hub(out / "hub")
    rows_path = out / f"loo_{merge}.jsonl"
    done = {(r["set"], r["n"], r["seed"], r["start"]) for r in _rows(rows_path)
            if not tune or "tuned" in r or r["start"] not in TUNED_STARTS}
    for n, held_out in [(n, held_out) for n in sizes for held_out in sets]:  # the smallest size first, every set
        modules = [module_name(s, "sparse-L") for s in SETS if s != held_out
                   and module_name(s, "sparse-L") in hub.names()]
        parts = set_parts(held_out)
        valid, test = parts["valid"][:FEW_VALID], _sample(parts["test"], FEW_TEST, seed=1)
        single = _single_candidates(hub, modules, held_out, test, out)
        for seed in seeds:
            train = _sample(parts["train"], n, seed=seed)
            try:
                potential_candidates(hub, modules, read_potential_set(train, forces=True, stress=True))
            except ValueError as error:
                if (held_out, n, seed, "none") not in done:
                    with open(rows_path, "a") as handle:
                        handle.write(json.dumps({"set": held_out, "n": n, "seed": seed, "start": "none",
                                                 "refused": str(error)}) + "\n")
                print(f"{held_out} n={n} seed {seed}: compose refuses it: {error}", flush=True)
                continue
            composed = {}
            for strategy, proxy in starts:
                label = start_label(strategy, proxy)
                if (held_out, n, seed, label) in done:
                    continue
                folder = out / "starts" / f"{held_out}-n{n}-s{seed}-{label}-{merge}"
                start = time.perf_counter()
                recipe = compose_potential(hub, train, folder, strategy=strategy, proxy=proxy, merge=merge,
                                           modules=modules, device="cpu", overwrite=True)
                compose_s = time.perf_counter() - start
                zero_shot = _test_errors(folder, test)
                weights = {m["name"]: m["weight"] for m in recipe["modules"] if m["weight"] > 0}
                row = {"set": held_out, "n": n, "seed": seed, "start": label, "merge": merge, "weights": weights,
                       "fallback": recipe["potential"]["fallback"], "compose_s": compose_s,
                       "train_errors": recipe["potential"]["composed_errors"], "zero_shot": zero_shot,
                       "single": single,
                       "candidates": {"pretrained": {"errors": recipe["potential"]["pretrained"]["errors"],
                                                     "proxy_mae": recipe["potential"]["pretrained"]["proxy_mae"]},
                                      **{m["name"]: {"errors": m["errors"], "proxy_mae": m["proxy_mae"]}
                                         for m in recipe["modules"]}}}
                if tune and strategy in TUNED_STARTS:
                    same = next((k for k, w in composed.items() if w == weights), None)
                    if same is not None:
                        row["tuned"], row["same_start_as"] = composed[same]["tuned"], same
                    else:
                        config = FinetuneConfig(method="sparse", batch_size=5, epochs=10_000,
                                                patience=10_000, max_steps=steps, seed=seed)
                        start = time.perf_counter()
                        tuned = out / "runs" / folder.name
                        record = finetune_potential(str(folder), train, valid, tuned, config, test=test,
                                                    progress=False, overwrite=True, stress_check=False)
                        row["tuned"] = record["metrics"]["test"]
                        row["tune_s"] = time.perf_counter() - start
                        row["kept_start"] = record["result"].get("kept_start", False)
                        shutil.rmtree(tuned)
                    composed[label] = dict(row, weights=weights)
                shutil.rmtree(folder)
                key = (held_out, n, seed, label)
                kept = [r for r in _rows(rows_path) if (r["set"], r["n"], r["seed"], r["start"]) != key]
                rows_path.write_text("".join(json.dumps(r) + "\n" for r in [*kept, row]))
                print(f"{held_out} n={n} seed {seed} {label:13s} zero-shot F {zero_shot['forces_mae']:6.1f} "
                      f"E {zero_shot['energy_mae']:7.2f}" + (f"  tuned F {row['tuned']['forces_mae']:6.1f} "
                                                             f"E {row['tuned']['energy_mae']:7.2f}"
                                                             if "tuned" in row else "")
                      + f"  weights {json.dumps({k: round(v, 3) for k, v in weights.items()})}", flush=True)


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def _test_errors(model: Path, frames: list) -> dict[str, float]:
    """Energy (meV/atom), force (meV/Å) and stress (GPa) MAE of a saved model on labelled ``frames``."""
    from ase_moma.finetune.loss import PotentialLoss, evaluate
    from ase_moma.finetune.potential_data import read_potential_set
    from ase_moma.loading import load_backbone

    backbone = load_backbone(str(model), device="cpu")
    data = read_potential_set(frames, forces=True, stress=True)
    return evaluate(backbone, [backbone.graph(a) for a in data.frames], data, PotentialLoss())


def _single_candidates(hub, modules: list[str], held_out: str, test: list, out: Path) -> dict:
    """Each candidate alone (the pretrained potential and every module) on the held-out set's test frames: the
    error a proxy should predict. Cached in ``out/single_<set>.json``."""
    from ase_moma.compose.potential_scores import frame_errors, predict_frames
    from ase_moma.delta import apply_delta, read_delta
    from ase_moma.finetune.loss import PotentialLoss
    from ase_moma.finetune.potential_data import read_potential_set
    from ase_moma.module_files import DELTA, load_tensors

    path = out / f"single_{held_out}.json"
    if path.is_file():
        return json.loads(path.read_text())
    data = read_potential_set(test, forces=True, stress=True)
    backbone = hub.load_backbone(device="cpu")
    base = {k: v.clone() for k, v in backbone.model.state_dict().items()}
    graphs = [backbone.graph(a) for a in data.frames]
    result = {}
    for name in ["pretrained", *modules]:
        backbone.model.load_state_dict(base)
        if name != "pretrained":
            apply_delta(backbone.model, read_delta(load_tensors(hub.folder(name) / DELTA)))
        result[name] = frame_errors(predict_frames(backbone, graphs, forces=True, stress=True), data, PotentialLoss())
    path.write_text(json.dumps(result, indent=1))
    return result


def merged_skills(out: Path, pairs: list[tuple[str, str]], methods: list[str]) -> None:
    """Merge the two modules of each pair (one method) with weight ½ each, by plain sum and by sign consensus;
    score every model on both chemistries' test frames beside each module alone, the union-trained model
    (where it has been trained; a later run fills it in) and the pretrained potential. Writes
    ``out/merge.json``."""
    from ase_moma.compose.delta_merge import merge_deltas
    from ase_moma.compose.potential_scores import frame_errors, predict_frames
    from ase_moma.delta import apply_delta, read_delta
    from ase_moma.finetune.inspect import compare_moved
    from ase_moma.finetune.loss import PotentialLoss
    from ase_moma.finetune.potential_data import read_potential_set
    from ase_moma.hub import Hub
    from ase_moma.module_files import DELTA, load_tensors

    hub = Hub(out / "hub")
    backbone = hub.load_backbone(device="cpu")
    base = {k: v.clone() for k, v in backbone.model.state_dict().items()}
    shapes = {k: v.shape for k, v in base.items()}
    report_path = out / "merge.json"
    report = json.loads(report_path.read_text()) if report_path.is_file() else {}
    for a, b in pairs:
        tests = {name: read_potential_set(set_parts(name)["test"], forces=True, stress=True) for name in (a, b)}
        graphs = {name: [backbone.graph(atoms) for atoms in data.frames] for name, data in tests.items()}

        def delta_of(name: str):
            return read_delta(load_tensors(hub.folder(name) / DELTA))

        def score(delta) -> dict:
            backbone.model.load_state_dict(base)
            if delta is not None:
                apply_delta(backbone.model, delta)
            return {name: frame_errors(predict_frames(backbone, graphs[name], forces=True, stress=True), data,
                                       PotentialLoss()) for name, data in tests.items()}

        pretrained = score(None)
        for method in methods:
            key = f"{a}+{b}:{method}"
            names = [module_name(a, method), module_name(b, method)]
            union = module_name(f"{a}+{b}", method)
            union_ready = union in hub.names()
            missing = [name for name in names if name not in hub.names()]
            if key in report and report[key]["union"] is None and union_ready:
                report[key]["union"] = score(delta_of(union))
                report_path.write_text(json.dumps(report, indent=1))
            if key in report or missing:
                print(f"{key}: {'done' if key in report else 'missing ' + ', '.join(missing)}", flush=True)
                continue
            first, second = map(delta_of, names)
            overlap = compare_moved(hub.folder(names[0]), hub.folder(names[1]))
            row = {"pretrained": pretrained, "alone": {a: score(first), b: score(second)},
                   "union": score(delta_of(union)) if union_ready else None,
                   "merged": {merge: score(merge_deltas([first, second], [0.5, 0.5], shapes, merge))
                              for merge in ("sum", "sign_consensus")},
                   "moved_entries": overlap["moved"], "shared_entries": overlap["shared"],
                   "shared_by_chance": overlap["by_chance"], "overlap": overlap["jaccard"]}
            report[key] = row
            report_path.write_text(json.dumps(report, indent=1))
            own = {name: row["alone"][name][name]["forces_mae"] for name in (a, b)}
            print(f"{key}: overlap of moved entries {100 * row['overlap']:.1f} % ({row['shared_entries']} shared, "
                  f"{row['shared_by_chance']:.0f} by chance); force MAE " + "; ".join(
                f"{name}: own module {own[name]:.1f}, sum {row['merged']['sum'][name]['forces_mae']:.1f}, "
                f"sign consensus {row['merged']['sign_consensus'][name]['forces_mae']:.1f}, union "
                f"{_union_f(row, name)}, pretrained {pretrained[name]['forces_mae']:.1f}"
                for name in (a, b)), flush=True)


def print_tables(out: Path) -> None:
    """Markdown tables of every report in ``out``: the leave-one-out starts, the proxies, merged skills."""
    from scipy.stats import spearmanr

    for path in sorted(out.glob("loo_*.jsonl")):
        every = _rows(path)
        rows = [r for r in every if "refused" not in r]
        refused = {(r["set"], r["n"]): r["refused"] for r in every if "refused" in r}
        if not any(r["start"] == "no_hub" for r in rows):  # the pretrained start has no merge: borrow it
            runs = {(r["set"], r["n"], r["seed"]) for r in rows}
            rows += [r for r in _rows(out / "loo_sum.jsonl") if r["start"] == "no_hub"
                     and (r["set"], r["n"], r["seed"]) in runs]
        print(f"\n### Leave one set out ({path.name}): test MAE after sparse-L fine-tuning from each "
              "start, mean ± std over seeds (zero-shot in brackets); F meV/Å, E meV/atom\n")
        starts = [start_label(*s) for s in STARTS]
        print("| held-out set | n | " + " | ".join(starts) + " | AMC − pretrained, F (paired) |")
        print("|---|---|" + "---|" * len(starts) + "---|")
        for held_out, n in sorted({(r["set"], r["n"]) for r in rows}, key=lambda k: (k[1], SETS.index(k[0]))):
            group = [r for r in rows if r["set"] == held_out and r["n"] == n]
            cells = []
            for label in starts:
                mine = [r for r in group if r["start"] == label]
                zero = [r["zero_shot"]["forces_mae"] for r in mine]
                tuned = [r["tuned"]["forces_mae"] for r in mine if "tuned" in r]
                energy = [r["tuned"]["energy_mae"] for r in mine if "tuned" in r]
                cells.append((f"F {_ms(tuned)}, E {_ms(energy)} " if tuned else "") + f"({_ms(zero)})"
                             if mine else "–")
            by_seed = {r["seed"]: r for r in group if r["start"] == "no_hub" and "tuned" in r}
            paired = [r["tuned"]["forces_mae"] - by_seed[r["seed"]]["tuned"]["forces_mae"] for r in group
                      if r["start"] == "amc" and "tuned" in r and r["seed"] in by_seed]
            print(f"| {held_out} | {n} | " + " | ".join(cells) + f" | {_ms(paired, signed=True)} |")
        for n in sorted({r["n"] for r in rows}):
            verdicts = [_amc_verdict([r for r in rows if r["set"] == held_out and r["n"] == n])
                        for held_out in SETS]
            verdicts = [v for v in verdicts if v is not None]
            print(f"\nn = {n}: the AMC start below the pretrained start (tuned force MAE, mean over seeds) on "
                  f"{sum(v == 'below' for v in verdicts)} of {len(verdicts)} held-out sets; above it by more "
                  f"than the pretrained start's seed spread on {sum(v == 'worse' for v in verdicts)}.")
        for (held_out, n), reason in sorted(refused.items()):
            print(f"\n{held_out}, n = {n}: no start composed; `compose --potential` refuses it: {reason}")
        print("\nAMC's weights (mean over seeds; the rest is the pretrained potential's):\n")
        for held_out, n in sorted({(r["set"], r["n"]) for r in rows}, key=lambda k: (k[1], SETS.index(k[0]))):
            amc = [r for r in rows if r["set"] == held_out and r["n"] == n and r["start"] == "amc"]
            names = sorted({name for r in amc for name in r["weights"]})
            mean = {name: np.mean([r["weights"].get(name, 0.0) for r in amc]) for name in names}
            fallbacks = sum(bool(r["fallback"]) for r in amc)
            print(f"- {held_out}, n = {n}: " + (", ".join(f"{k} {v:.2f}" for k, v in mean.items()) or "none")
                  + (f" ({fallbacks} of {len(amc)} fell back to the pretrained weights)" if fallbacks else ""))
        print("\nWhich proxy ranks the candidates as their test force error does (Spearman over the pretrained "
              "potential and each module, mean over seeds):\n")
        print("| held-out set | n | own errors on the n frames (loss) | kNN proxy MAE | AMC (errors) zero-shot F | "
              "AMC (kNN) zero-shot F |")
        print("|---|---|---|---|---|---|")
        for held_out, n in sorted({(r["set"], r["n"]) for r in rows}, key=lambda k: (k[1], SETS.index(k[0]))):
            knn_rows = [r for r in rows if r["set"] == held_out and r["n"] == n and r["start"] == "amc-knn"]
            direct, knn = [], []
            for r in knn_rows:
                names = list(r["single"])
                truth = [r["single"][name]["forces_mae"] for name in names]
                candidates = r["candidates"]
                direct.append(spearmanr([candidates[name]["errors"]["loss"] for name in names], truth)[0])
                knn.append(spearmanr([candidates[name]["proxy_mae"] for name in names], truth)[0])
            amc = [r["zero_shot"]["forces_mae"] for r in rows if r["set"] == held_out and r["n"] == n
                   and r["start"] == "amc"]
            amc_knn = [r["zero_shot"]["forces_mae"] for r in knn_rows]
            print(f"| {held_out} | {n} | {_ms(direct, signed=True)} | {_ms(knn, signed=True)} | {_ms(amc)} | "
                  f"{_ms(amc_knn)} |")
    merge_path = out / "merge.json"
    if merge_path.is_file():
        report = json.loads(merge_path.read_text())
        print("\n### Merged skills: test force MAE (meV/Å) on each chemistry; interference = merged ÷ own module\n")
        print("| pair, method | moved entries (overlap) | chemistry | pretrained | own module | other module | "
              "union | sum (½, ½) | sign consensus | interference sum / sign consensus |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for key, row in report.items():
            pair = key.split(":")[0].split("+")
            for name, other in (pair, pair[::-1]):
                own = row["alone"][name][name]["forces_mae"]
                merged = {merge: row["merged"][merge][name]["forces_mae"] for merge in ("sum", "sign_consensus")}
                print(f"| {key} | {'/'.join(map(str, row['moved_entries']))} ({100 * row['overlap']:.1f} %) | {name} | "
                      f"{row['pretrained'][name]['forces_mae']:.1f} | {own:.1f} | "
                      f"{row['alone'][other][name]['forces_mae']:.1f} | {_union_f(row, name)} | "
                      f"{merged['sum']:.1f} | {merged['sign_consensus']:.1f} | "
                      f"{merged['sum'] / own:.2f} / {merged['sign_consensus'] / own:.2f} |")


def _amc_verdict(group: list[dict]) -> str | None:
    """'below' where the AMC start's tuned force MAE (mean over seeds) is below the pretrained start's,
    'worse' where it is above by more than the pretrained start's spread over seeds (its std, or 1 % of its
    mean where one seed ran), 'within' otherwise; None without both."""
    amc = [r["tuned"]["forces_mae"] for r in group if r["start"] == "amc" and "tuned" in r]
    pretrained = [r["tuned"]["forces_mae"] for r in group if r["start"] == "no_hub" and "tuned" in r]
    if not amc or not pretrained:
        return None
    noise = float(np.std(pretrained)) if len(pretrained) > 1 else 0.01 * float(np.mean(pretrained))
    difference = float(np.mean(amc) - np.mean(pretrained))
    return "below" if difference < 0 else "worse" if difference > noise else "within"


def _union_f(row: dict, name: str) -> str:
    """The union-trained module's force MAE on one chemistry, or a dash where it was not trained."""
    return "–" if row["union"] is None else f"{row['union'][name]['forces_mae']:.1f}"


def _ms(values: list[float], signed: bool = False, digits: int = 1) -> str:
    """mean ± std of the finite values (the value alone when there is one; – when none)."""
    values = [v for v in values if v is not None and np.isfinite(v)]
    if not values:
        return "–"
    sign = "+" if signed else ""
    return (f"{np.mean(values):{sign}.{digits}f} ± {np.std(values):.{digits}f}" if len(values) > 1
            else f"{values[0]:{sign}.{digits}f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    stages = parser.add_subparsers(dest="stage", required=True)
    modules = stages.add_parser("modules")
    modules.add_argument("--sets", nargs="+", default=list(SETS), choices=SETS)
    modules.add_argument("--methods", nargs="+", default=["sparse-L"], choices=list(METHODS))
    modules.add_argument("--module-steps", type=int, default=100)
    modules.add_argument("--union", nargs=2, metavar="SET", choices=SETS,
                         help="also train on the union of two sets (the merged-skills baseline)")
    merge = stages.add_parser("merge")
    merge.add_argument("--pairs", nargs="+", default=["mlearn_Si:mlearn_Ge", "mlearn_Mo:mlearn_Li"])
    merge.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    stages.add_parser("tables")
    loo = stages.add_parser("loo")
    loo.add_argument("--sets", nargs="+", default=list(SETS), choices=SETS)
    loo.add_argument("--sizes", nargs="+", type=int, default=[10, 40])
    loo.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    loo.add_argument("--steps", type=int, default=15)
    loo.add_argument("--merge", default="sum", choices=["sum", "sign_consensus"])
    loo.add_argument("--no-tune", action="store_true", help="score the starts zero-shot only")
    loo.add_argument("--starts", nargs="+", choices=[start_label(*s) for s in STARTS],
                     help="only these starts (default: all)")
    loo.add_argument("--threads", type=int, help="torch threads (two processes of one thread each use two "
                     "cores better than one of two)")
    for stage in stages.choices.values():
        stage.add_argument("-o", "--output", default="bench/out/compose_potentials")
    args = parser.parse_args()
    if not DATA.is_dir():
        parser.error(f"real data not found at {DATA}")
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)
    if args.stage == "modules":
        train_modules(out, [] if args.union else args.sets, args.methods, args.module_steps, args.union)
    elif args.stage == "merge":
        merged_skills(out, [tuple(pair.split(":")) for pair in args.pairs], args.methods)
    elif args.stage == "loo":
        starts = tuple(s for s in STARTS if args.starts is None or start_label(*s) in args.starts)
        leave_one_out(out, args.sets, args.sizes, args.seeds, args.steps, args.merge, not args.no_tune, starts)
    else:
        print_tables(out)


if __name__ == "__main__":
    main()
