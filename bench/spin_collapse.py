"""Order gaps and moments where moments shrink and vanish: the spin head with and without its Landau term.

Sets of spin states computed by ``bench/fe_orders_dft.py`` (each geometry in its ferromagnetic and
antiparallel orders, and for cobalt its non-magnetic state; the state's signs are the frames' initial
moments, as the DFT runs were started). A spin head trains on the training files with the backbone frozen
(the defaults a user runs: ``finetune --method zero_shot --spin-head vector`` with the stress weight 0, the
sets carrying ideal cells), a tenth of the training geometries (every state of each) validating, the seed
choosing which. On every held-out file it reports, per geometry and state, the gap E(state) − E(FM)
(meV/atom) against DFT — MAE, Spearman ρ, the signs — and |m| against DFT's on the states that keep a moment
and on those whose moments collapse (DFT |m| < 0.1 μB with a moment set), and the head's mean |m| on each
collapsed state. Beside it:

- no difference (the bare backbone: every state of a geometry one energy);
- the nearest training geometry's gap (same lattice and state, nearest lattice constant; none for a lattice
  the training set lacks);
- a Heisenberg model with one J per 0.25 Å shell on the states' unit spins (zero for no moment), least
  squares on the training gaps;
- the head's start before training (its closed-form fits), and the head without the Landau term
  (``--no-longitudinal``);
- the training mean |m| (of the atoms given a moment) and CHGNet 0.3.0's own moments.

    python bench/spin_collapse.py --train data/magnetic/co_orders_pbe_training.extxyz \\
        --heldout data/magnetic/co_orders_pbe_heldout.extxyz --seeds 0 1 2 [-o bench/out/spin_collapse/co]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import ase.io
import numpy as np
from spin_orders import pair_scores, predicted_energies, shell_features, split_by_geometry

from ase_moma import load_backbone, load_calculator
from ase_moma.finetune import FinetuneConfig, Finetuner
from ase_moma.finetune.loss import PotentialLoss
from ase_moma.finetune.potential_data import read_potential_set

LOSS = PotentialLoss(energy=1.0, forces=1.0, stress=0.0, magmoms=1.0)  # ideal cells: stress is the backbone's
COLLAPSED = 0.1  # μB: a state given a moment whose DFT |m| ends below this has lost it


def describe(atoms) -> tuple[str, float, str]:
    """(lattice, lattice constant in Å, state) of a frame of bench/fe_orders_dft.py."""
    lattice, constant, _, *state = atoms.info["config_type"].split()
    return lattice, float(constant), " ".join(state)


def spins(atoms) -> np.ndarray:
    """(n,) the state's signs along z: the initial moments' (0 for an atom given none)."""
    return np.sign(atoms.get_initial_magnetic_moments())


def gaps(frames: list, energies: np.ndarray) -> dict[tuple[str, float, str], float]:
    """{(lattice, constant, state): E(state) − E(ferromagnetic)} in eV/atom, every state but the ferromagnet."""
    per_atom = {describe(atoms): energy / len(atoms) for atoms, energy in zip(frames, energies)}
    return {(lattice, constant, state): value - per_atom[(lattice, constant, "ferromagnetic")]
            for (lattice, constant, state), value in per_atom.items() if state != "ferromagnetic"}


def nearest_geometry(train: dict, keys: list) -> np.ndarray:
    """(K,) the DFT gap of the training geometry of the same lattice and state at the nearest lattice constant
    (NaN where the training set has none)."""
    out = []
    for lattice, constant, state in keys:
        known = [(abs(c - constant), gap) for (l, c, s), gap in train.items() if l == lattice and s == state]
        out.append(min(known)[1] if known else np.nan)
    return np.array(out)


def heisenberg(train_frames: list, train_gaps: dict, frames: list, keys: list) -> np.ndarray:
    """(K,) the per-shell Heisenberg model's gaps (eV/atom), J by least squares on the training gaps."""
    def differences(source: list, wanted: list) -> np.ndarray:  # the state's unit spins: its signs along z
        features = {describe(atoms): shell_features(atoms, np.outer(spins(atoms), [0.0, 0.0, 1.0]))
                    for atoms in source}
        return np.array([features[key] - features[(key[0], key[1], "ferromagnetic")] for key in wanted])

    train_keys = list(train_gaps)
    shells = np.linalg.lstsq(differences(train_frames, train_keys), np.array([train_gaps[k] for k in train_keys]),
                             rcond=None)[0]
    return differences(frames, keys) @ shells


def gap_scores(predicted: np.ndarray, truth: np.ndarray) -> dict:
    """MAE (meV/atom), Spearman ρ and the fraction of DFT's signs, over the gaps where a prediction exists."""
    known = np.isfinite(predicted)
    if not known.any():
        return {"gap_mae": None, "spearman": None, "signs": None, "count": 0}
    scores = pair_scores(predicted[known], truth[known])
    return {"gap_mae": scores["pair_mae"], "count": int(known.sum()), "signs": scores["pair_sign_agreement"],
            "spearman": None if np.isnan(scores["pair_spearman"]) else scores["pair_spearman"]}


def moment_scores(predicted: np.ndarray, truth: np.ndarray, given: np.ndarray) -> dict:
    """|m| MAE (μB) on atoms given a moment: all, those whose DFT moment survives, those where it collapsed."""
    collapsed = given & (truth < COLLAPSED)
    kept = given & ~collapsed
    mae = lambda mask: float(np.abs(predicted[mask] - truth[mask]).mean()) if mask.any() else None  # noqa: E731
    return {"m_mae": mae(given), "m_mae_kept": mae(kept), "m_mae_collapsed": mae(collapsed),
            "collapsed_atoms": int(collapsed.sum())}


def run_head(train, valid, held: dict, seed: int, longitudinal: bool, epochs: int = 100) -> dict:
    """Train a head (frozen backbone, defaults, seed; ``epochs`` 0: its start alone) and score it on every
    held-out set."""
    config = FinetuneConfig(method="zero_shot", spin_head="vector", loss=LOSS, seed=seed, longitudinal=longitudinal,
                            epochs=epochs)
    tuner = Finetuner(load_backbone("sevennet", device="cpu"), config)
    start = time.perf_counter()
    result = tuner.fit(train, valid, progress=False)
    scores = {"steps": result.steps, "kept_start": result.kept_start, "seconds": time.perf_counter() - start,
              "best_epoch": result.best_epoch}
    for name, (labelled, frames, keys, truth, given, dft_m) in held.items():
        graphs = tuner.graphs(labelled)
        energies = predicted_energies(tuner.model, graphs)
        predicted = gaps(frames, energies)
        moments = []
        for begin in range(0, len(graphs), 16):
            out = tuner.model.forward(tuner.model.collate(graphs[begin:begin + 16]), forces=False, stress=False)
            moments.append(out.magmoms.detach().norm(dim=-1).double().numpy())
        moments = np.concatenate(moments)
        scores[name] = {**gap_scores(np.array([predicted[k] for k in keys]), truth),
                        **moment_scores(moments, dft_m, given),
                        "gaps_meV": {" ".join(map(str, k)): round(1000 * predicted[k], 1) for k in keys},
                        "collapsed_states_m": collapsed_states(frames, moments, dft_m, given)}
    return scores


def collapsed_states(frames: list, predicted: np.ndarray, truth: np.ndarray, given: np.ndarray) -> dict[str, float]:
    """{"lattice constant state": mean predicted |m| (μB)} over each frame's atoms whose DFT moment collapsed."""
    states, start = {}, 0
    for atoms in frames:
        rows = slice(start, start + len(atoms))
        collapsed = given[rows] & (truth[rows] < COLLAPSED)
        if collapsed.any():
            states[" ".join(map(str, describe(atoms)))] = round(float(predicted[rows][collapsed].mean()), 3)
        start += len(atoms)
    return states


def read_states(paths: list[Path]) -> list:
    return [atoms for path in paths for atoms in ase.io.read(path, ":")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=Path, nargs="+", required=True)
    parser.add_argument("--heldout", type=Path, nargs="+", required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--no-ablation", action="store_true", help="train only the head with its Landau term")
    parser.add_argument("-o", "--output", type=Path, default=Path("bench/out/spin_collapse"))
    args = parser.parse_args()
    read = lambda frames, what: read_potential_set(frames, forces=True, stress=False, magmoms="vector",  # noqa: E731
                                                   what=what)
    pool = read_states(args.train)
    held = {}
    for path in args.heldout:
        frames = ase.io.read(path, ":")
        labelled = read(frames, path.stem)
        truth = gaps(frames, labelled.energy)
        keys = sorted(truth)
        given = np.concatenate([spins(atoms) != 0 for atoms in frames])
        dft_m = np.concatenate([np.linalg.norm(m, axis=1) for m in labelled.magmoms])
        held[path.stem] = (labelled, frames, keys, np.array([truth[k] for k in keys]), given, dft_m)
    chgnet = load_calculator("chgnet", device="cpu")
    report = {"train": [str(p) for p in args.train], "heldout": [str(p) for p in args.heldout], "seeds": {}}
    for seed in args.seeds:
        parts = split_by_geometry(pool, seed)
        train, valid = read(parts["train"], "training set"), read(parts["valid"], "validation set")
        train_gaps = gaps(parts["train"], train.energy)
        train_m = np.concatenate([np.linalg.norm(m, axis=1)[spins(a) != 0] for m, a in zip(train.magmoms, parts["train"])])
        rows = {}
        for name, (labelled, frames, keys, truth, given, dft_m) in held.items():
            rows.setdefault("no difference", {})[name] = gap_scores(np.zeros_like(truth), truth)
            rows.setdefault("nearest training geometry", {})[name] = gap_scores(nearest_geometry(train_gaps, keys), truth)
            rows.setdefault("Heisenberg per 0.25 Å shell", {})[name] = gap_scores(
                heisenberg(parts["train"], train_gaps, frames, keys), truth)
            rows.setdefault("training mean |m|", {})[name] = moment_scores(np.full_like(dft_m, train_m.mean()), dft_m, given)
            if seed == args.seeds[0]:
                chg = np.concatenate([np.abs(row["magmoms"]) for row in chgnet.predict(frames, batch_size=8)])
                rows.setdefault("CHGNet 0.3.0", {})[name] = moment_scores(chg, dft_m, given)
        heads = (("head", True, 100), ("head's start (no training)", True, 0))
        heads += (("head without the Landau term", False, 100),) if not args.no_ablation else ()
        for label, longitudinal, epochs in heads:
            rows[label] = run_head(train, valid, held, seed, longitudinal, epochs)
            print(f"seed {seed} {label}: " + "; ".join(
                f"{name} gaps {rows[label][name]['gap_mae']:.1f} meV/atom, |m| {rows[label][name]['m_mae']:.3f} "
                f"(collapsed {rows[label][name]['m_mae_collapsed'] if rows[label][name]['m_mae_collapsed'] is None else round(rows[label][name]['m_mae_collapsed'], 3)})"
                for name in held) + f", {rows[label]['steps']} steps, {rows[label]['seconds']:.0f} s", flush=True)
            for name in held:
                print(f"  {name}, predicted |m| on the states DFT collapsed: {rows[label][name]['collapsed_states_m']}",
                      flush=True)
        report["seeds"][seed] = rows
        args.output.mkdir(parents=True, exist_ok=True)
        (args.output / "report.json").write_text(json.dumps(report, indent=1, default=float))
    table(report, list(held))


def table(report: dict, names: list[str]) -> None:
    """Mean ± std over the seeds of every row's gap MAE and |m| errors, one table per held-out set."""
    seeds = list(report["seeds"].values())
    labels = list(dict.fromkeys(label for rows in seeds for label in rows))
    for name in names:
        print(f"\n{name} ({len(seeds)} seeds)\n| run | gaps' MAE (meV/atom) | Spearman | signs | |m| MAE (μB) | "
              "kept | collapsed |\n|---|---|---|---|---|---|---|")
        for label in labels:
            cells = []
            for key in ("gap_mae", "spearman", "signs", "m_mae", "m_mae_kept", "m_mae_collapsed"):
                values = [rows[label][name].get(key) for rows in seeds if label in rows and name in rows[label]]
                values = [v for v in values if v is not None]
                cells.append("–" if not values else f"{np.mean(values):.3g}" + (f" ± {np.std(values):.2g}" if len(values) > 1 else ""))
            print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
