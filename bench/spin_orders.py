"""Magnetic energetics on real data: energy differences between spin orders of one geometry.

fe_spin.extxyz (../shared/data/magnetic) holds 227 geometries computed more than once (587 frames,
493 pairs of frames of one geometry). In 481 of those pairs the two spin configurations are one
state turned as a whole (the same relative orientations and magnitudes): without spin–orbit
coupling they must have one energy, and a spin head gives them one by symmetry; their DFT energies
differ by a median 5.0 meV/atom, the noise floor of this comparison. Only 9 pairs (all two-atom cells
of the bcc–hcp transition) are different orders, with relative orientations that differ; those are
the test here. Their geometries are held out whole; the rest of the file is the training pool, split
90/10 into training and validation (seeded). Each run trains a spin head on SevenNet-0 (the backbone
frozen, or sparse-tuned) with and without its exchange term (``FinetuneConfig.exchange``), and
reports on the held-out frames: energy, force and moment errors, and for every pair of different
orders the predicted energy difference against DFT's: MAE (meV/atom), Spearman ρ and the fraction of
pairs ordered as DFT orders them.

Baselines beside it: the bare backbone (one energy for every order of a geometry: ΔE = 0, ρ
undefined), the per-element mean |m| of the training set, CHGNet 0.3.0's own magnitudes, and the
head's untrained start (ridge magnitudes; with the exchange, J's least-squares start). Last, the time
of a training step with the head against a plain one.

--quick (training capped at 96 frames of at most 16 atoms, validation 16; batch 16, 2 epochs; sparse
only with the exchange) runs on the 2-core CPU machine in a few minutes; the default (the whole pool,
batch 64, up to 100 epochs) is for a GPU.

With ``--heldout FILE`` every run is also scored on the pairs of orders of a set none of them trained on
(``bench/fe_orders_dft.py --heldout`` computes one with GPAW: bcc and fcc iron cells in two or three
collinear orders at several lattice constants).

    python bench/spin_orders.py --quick [--methods zero_shot sparse] [--seed 0] [--heldout FE.extxyz] [-o bench/out/spin_orders]
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import time
from collections import defaultdict
from pathlib import Path

import ase.io
import numpy as np
from scipy.stats import spearmanr
from spin_fe import magnitudes, step_times

from ase_moma import load_backbone, load_calculator
from ase_moma.finetune import FinetuneConfig, Finetuner
from ase_moma.finetune.loss import evaluate
from ase_moma.finetune.potential_data import read_potential_set
from ase_moma.finetune.spin_orders import geometry_key

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "magnetic" / "fe_spin.extxyz"


ORDER_CHANGE = 0.1  # mean |Δ(s_i·s_j)| over atom pairs above which two configurations are different orders


def relative_change(first, second) -> float:
    """Mean |Δ(s_i·s_j)| between two configurations of one geometry: 0 when one is the other turned as a whole."""
    units = []
    for atoms in (first, second):
        moments = atoms.arrays["magmoms_vector"]
        units.append(moments / np.maximum(np.linalg.norm(moments, axis=1, keepdims=True), 1e-9))
    return float(np.abs(units[0] @ units[0].T - units[1] @ units[1].T).mean())


def geometry_groups(frames: list) -> list[list[int]]:
    """The positions in ``frames`` of each geometry's frames, geometries in order of first appearance."""
    groups: dict[str, list[int]] = defaultdict(list)
    for index, atoms in enumerate(frames):
        groups[geometry_key(atoms)].append(index)
    return list(groups.values())


def different_orders(frames: list) -> list[tuple[int, int]]:
    """Every pair of frames (positions in ``frames``) at one geometry in different orders, geometry by geometry."""
    return [(a, b) for members in geometry_groups(frames) for a, b in itertools.combinations(members, 2)
            if relative_change(frames[a], frames[b]) > ORDER_CHANGE]


def split(frames: list, seed: int) -> tuple[dict[str, list], list[list[int]], list[tuple[int, int]]]:
    """Training, validation and test frames; the test geometries' groups and their pairs of different orders
    (positions in the test list). Every geometry with a pair of different orders is in the test set."""
    pairs = different_orders(frames)
    paired = {frame for pair in pairs for frame in pair}
    chosen = [members for members in geometry_groups(frames) if paired.intersection(members)]
    test = [i for members in chosen for i in members]
    held = set(test)
    rng = np.random.default_rng(seed)
    pool = [i for i in range(len(frames)) if i not in held]
    pool = [pool[i] for i in rng.permutation(len(pool))]
    n_valid = max(1, len(pool) // 10)
    parts = {"train": sorted(pool[n_valid:]), "valid": sorted(pool[:n_valid]), "test": test}
    position = {frame: k for k, frame in enumerate(test)}
    return ({role: [frames[i] for i in indices] for role, indices in parts.items()},
            [[position[i] for i in members] for members in chosen], [(position[a], position[b]) for a, b in pairs])


def order_pairs(energy: np.ndarray, counts: np.ndarray, pairs: list[tuple[int, int]]) -> np.ndarray:
    """(P,) energy-per-atom differences (eV/atom) of each pair of different orders."""
    per_atom = energy / counts
    return np.array([per_atom[a] - per_atom[b] for a, b in pairs])


def pair_scores(predicted: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """MAE (meV/atom), Spearman ρ and the fraction of pairs with DFT's sign (pairs DFT separates by >1 meV)."""
    informative = np.abs(reference) > 1e-3
    constant = np.ptp(predicted) < 1e-12
    return {"pair_mae": 1000 * float(np.mean(np.abs(predicted - reference))),
            "pair_spearman": float("nan") if constant else float(spearmanr(predicted, reference).statistic),
            "pair_sign_agreement": float(np.mean(np.sign(predicted[informative]) == np.sign(reference[informative])))}


def heldout_scores(predicted: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """:func:`pair_scores` of the held-out set's pairs, keys prefixed ``heldout_``, with the pairs' ΔE (meV/atom)."""
    scores = {f"heldout_{key}": value for key, value in pair_scores(predicted, reference).items()}
    return {**scores, "heldout_pairs_meV": [[round(1000 * p, 2), round(1000 * r, 2)] for p, r in zip(predicted, reference)]}


def predicted_energies(model, graphs: list, batch_size: int = 16) -> np.ndarray:
    out = []
    for begin in range(0, len(graphs), batch_size):
        batch = model.collate(graphs[begin:begin + batch_size])
        out.append(model.forward(batch, forces=False, stress=False).energy.detach().double().cpu().numpy())
    return np.concatenate(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="capped training set, batch 16, 2 epochs (CPU)")
    parser.add_argument("--methods", nargs="+", default=["zero_shot", "sparse"], choices=["zero_shot", "sparse", "full"])
    parser.add_argument("--seed", type=int, default=0, help="which half of the repeated geometries is the test set")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--head-lr", type=float, default=1e-2,
                        help="the head's learning rate (it trains from its start, unlike the backbone)")
    parser.add_argument("--heldout", type=Path, help="a spin-configuration set no run has seen (extxyz with "
                        "magmoms_vector; bench/fe_orders_dft.py --heldout makes one): its pairs of orders are scored too")
    parser.add_argument("-o", "--output", default="bench/out/spin_orders")
    args = parser.parse_args()
    if not DATA.is_file():
        parser.error(f"real data not found at {DATA}")
    if args.heldout and not args.heldout.is_file():
        parser.error(f"no held-out set at {args.heldout}")
    parts, groups, pairs = split(ase.io.read(DATA, ":"), args.seed)
    if args.quick:
        rng = np.random.default_rng(args.seed)
        for role, cap in (("train", 96), ("valid", 16)):
            small = [atoms for atoms in parts[role] if len(atoms) <= 16]
            parts[role] = [small[i] for i in sorted(rng.permutation(len(small))[:cap])]
    data = {role: read_potential_set(frames, forces=True, stress=True, magmoms="vector", what=f"fe_spin {role}")
            for role, frames in parts.items()}
    counts = data["test"].n_atoms()
    reference = order_pairs(data["test"].energy, counts, pairs)
    print(f"{', '.join(f'{len(v)} {k}' for k, v in data.items())} frames; {len(groups)} test geometries, "
          f"{len(reference)} pairs of different orders (|ΔE| median {1000 * np.median(np.abs(reference)):.1f} "
          "meV/atom)", flush=True)
    heldout = None
    if args.heldout:
        frames = ase.io.read(args.heldout, ":")
        heldout_set = read_potential_set(frames, forces=True, stress=True, magmoms="vector", what=str(args.heldout))
        heldout_pairs = different_orders(frames)
        heldout = (heldout_set, heldout_pairs,
                   order_pairs(heldout_set.energy, heldout_set.n_atoms(), heldout_pairs))
        print(f"held out: {len(frames)} frames, {len(heldout_pairs)} pairs of different orders (|ΔE| median "
              f"{1000 * np.median(np.abs(heldout[2])):.1f} meV/atom)", flush=True)
    config = (FinetuneConfig(spin_head="vector", batch_size=16, epochs=2, patience=2, head_lr=args.head_lr)
              if args.quick else FinetuneConfig(spin_head="vector", head_lr=args.head_lr))

    rows = []
    bare = load_backbone("sevennet", device=args.device)
    unlabelled = dataclasses.replace(data["test"], magmoms=None)
    bare_metrics = evaluate(bare, [bare.graph(a) for a in unlabelled.frames], unlabelled, config.loss)
    rows.append({"run": "bare SevenNet-0 (no head: one energy per geometry)", **bare_metrics,
                 **pair_scores(np.zeros_like(reference), reference),
                 **({} if heldout is None else heldout_scores(np.zeros_like(heldout[2]), heldout[2]))})
    runs = [("start (untrained head)", "zero_shot", {"epochs": 0}, (True, False))]
    runs += [(f"{method} + head", method, {}, (True,) if args.quick and method != "zero_shot" else (True, False))
             for method in args.methods]
    for label, method, options, exchanges in runs:
        for exchange in exchanges:
            backbone = load_backbone("sevennet", device=args.device)
            tuner = Finetuner(backbone, dataclasses.replace(config, method=method, exchange=exchange, **options))
            start = time.perf_counter()
            result = tuner.fit(data["train"], data["valid"], progress=False)
            tuner.export()
            graphs = tuner.graphs(data["test"])
            metrics = evaluate(tuner.model, graphs, data["test"], config.loss)
            predicted = (order_pairs(predicted_energies(tuner.model, graphs), counts, pairs) if exchange
                         else np.zeros_like(reference))  # without J the spin order cannot change the energy
            if heldout is not None:
                held_graphs = tuner.graphs(heldout[0])
                held_predicted = (order_pairs(predicted_energies(tuner.model, held_graphs), heldout[0].n_atoms(),
                                              heldout[1]) if exchange else np.zeros_like(heldout[2]))
            row = {"run": f"{label}, {'with' if exchange else 'without'} exchange", **metrics,
                   **pair_scores(predicted, reference),
                   **({} if heldout is None else heldout_scores(held_predicted, heldout[2])),
                   "steps": result.steps, "kept_start": result.kept_start,
                   "seconds": time.perf_counter() - start,
                   "exchange_start": tuner.exchange_start.record() if tuner.exchange_start else None}
            rows.append(row)
            print(f"  {row['run']:45s} E {row['energy_mae']:6.2f} meV/atom  F {row['forces_mae']:6.1f} meV/Å  "
                  f"|m| {row['magmom_magnitude_mae']:.3f} μB  ΔE pairs: MAE {row['pair_mae']:.1f} meV/atom  "
                  f"ρ {row['pair_spearman']:+.2f}  sign {row['pair_sign_agreement']:.2f}  ({result.steps} steps)",
                  flush=True)

    truth = np.concatenate([magnitudes(m) for m in data["test"].magmoms])
    train_mean = float(np.mean(np.concatenate([magnitudes(m) for m in data["train"].magmoms])))
    chgnet = load_calculator("chgnet", device=args.device).predict(data["test"].frames, batch_size=8)
    chgnet_mae = float(np.mean(np.abs(np.concatenate([np.abs(row["magmoms"]) for row in chgnet]) - truth)))
    head_step, plain_step = step_times(data["train"], config, args.device)
    report = {"quick": args.quick, "seed": args.seed, "sizes": {k: len(v) for k, v in data.items()},
              "pairs": len(reference), "rows": rows, "per_element_mean_magnitude_mae": float(np.mean(np.abs(truth - train_mean))),
              "chgnet_0.3.0_magnitude_mae": chgnet_mae,
              "step_seconds": {"with_head": head_step, "plain": plain_step, "ratio": head_step / plain_step},
              "config": dataclasses.asdict(config)}
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"report_seed{args.seed}.json").write_text(json.dumps(report, indent=1))
    print("\n| run | energy MAE (meV/atom) | force MAE (meV/Å) | |m| MAE (μB) | ΔE pairs MAE (meV/atom) "
          "| ΔE pairs Spearman | pairs ordered as DFT |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        moment = f"{row['magmom_magnitude_mae']:.3f}" if "magmom_magnitude_mae" in row else "–"
        rho = "–" if np.isnan(row["pair_spearman"]) else f"{row['pair_spearman']:+.2f}"
        print(f"| {row['run']} | {row['energy_mae']:.2f} | {row['forces_mae']:.1f} | {moment} | "
              f"{row['pair_mae']:.1f} | {rho} | {row['pair_sign_agreement']:.2f} |")
    print(f"| Fe's mean training |m| ({train_mean:.2f} μB) for every atom | – | – | "
          f"{report['per_element_mean_magnitude_mae']:.3f} | – | – | – |")
    print(f"| CHGNet 0.3.0 (own magnitudes) | – | – | {chgnet_mae:.3f} | – | – | – |")
    if heldout is not None:
        print(f"\nheld out ({args.heldout}, {len(heldout[1])} pairs of orders):\n"
              "| run | ΔE pairs MAE (meV/atom) | ΔE pairs Spearman | pairs ordered as DFT |\n|---|---|---|---|")
        for row in rows:
            rho = "–" if np.isnan(row["heldout_pair_spearman"]) else f"{row['heldout_pair_spearman']:+.2f}"
            print(f"| {row['run']} | {row['heldout_pair_mae']:.1f} | {rho} | {row['heldout_pair_sign_agreement']:.2f} |")
    print(f"\ntraining step (forward + backward, all weights, one batch): with the head {head_step:.2f} s, "
          f"plain {plain_step:.2f} s, ratio {head_step / plain_step:.2f} (goal ≤ 2)")


if __name__ == "__main__":
    main()
