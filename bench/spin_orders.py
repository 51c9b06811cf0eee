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

With ``--heldout FILE [FILE ...]`` every run is also scored on the pairs of orders of sets none of them
trained on: energy and |m| errors, and the order gaps against DFT (``data/magnetic/fe_orders_pbe_heldout``
and ``_bain.extxyz``, computed with GPAW by ``bench/fe_orders_dft.py``: bcc and fcc iron at lattice constants
the training set lacks, and body-centred tetragonal iron). Per-element mean |m| and CHGNet's moments sit
beside each set's moment errors.

With ``--train FILE`` the heads train on that set instead of fe_spin's pool (``data/magnetic/
fe_orders_pbe_training.extxyz``: bcc, fcc and hcp iron in pairs of orders), split by geometry into training
and validation; fe_spin's 9 pairs stay a test (their absolute energies come from another DFT code, so only
their differences are comparable, and its compressed cells lie outside the PBE set's range), and one more
row: the baseline a referee would fit first, a Heisenberg model with one J per 0.25 Å distance shell,
least squares on the training pairs' energy differences with unit spins (:func:`shell_features`).

Either way, two ablations with the backbone frozen: J of distance and species only
(``exchange_environment=False``) and magnitudes of geometry only (``local_order=False``).

    python bench/spin_orders.py --quick [--methods zero_shot sparse] [--seed 0]
        [--train data/magnetic/fe_orders_pbe_training.extxyz]
        [--heldout data/magnetic/fe_orders_pbe_heldout.extxyz data/magnetic/fe_orders_pbe_bain.extxyz]
        [-o bench/out/spin_orders]
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import ase.io
import numpy as np
from ase.neighborlist import neighbor_list
from scipy.stats import spearmanr
from spin_fe import magnitudes, step_times

from ase_moma import load_backbone, load_calculator
from ase_moma.finetune import FinetuneConfig, Finetuner
from ase_moma.finetune.loss import evaluate
from ase_moma.finetune.potential_data import read_potential_set
from ase_moma.spin.orders import differ_in_order, geometry_key

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "magnetic" / "fe_spin.extxyz"


def directions(atoms) -> np.ndarray:
    """(n, 3) unit directions of ``atoms``' DFT moments (zero where a moment is zero)."""
    moments = atoms.arrays["magmoms_vector"]
    return moments / np.maximum(np.linalg.norm(moments, axis=1, keepdims=True), 1e-9)


def geometry_groups(frames: list) -> list[list[int]]:
    """The positions in ``frames`` of each geometry's frames, geometries in order of first appearance."""
    groups: dict[str, list[int]] = defaultdict(list)
    for index, atoms in enumerate(frames):
        groups[geometry_key(atoms)].append(index)
    return list(groups.values())


def different_orders(frames: list) -> list[tuple[int, int]]:
    """Every pair of frames (positions in ``frames``) at one geometry in different orders, geometry by geometry."""
    return [(a, b) for members in geometry_groups(frames) for a, b in itertools.combinations(members, 2)
            if differ_in_order([directions(frames[a]), directions(frames[b])])]


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


def split_by_geometry(frames: list, seed: int) -> dict[str, list]:
    """Training and validation frames of a set of order pairs: about a tenth of its geometries (at least one),
    every order of each, validate."""
    groups = geometry_groups(frames)
    rng = np.random.default_rng(seed)
    chosen = set(rng.permutation(len(groups))[:max(1, len(groups) // 10)].tolist())
    return {role: [frames[i] for k, members in enumerate(groups) if (k in chosen) == (role == "valid")
                   for i in members] for role in ("train", "valid")}


SHELL_WIDTH, SHELL_CUTOFF = 0.25, 5.0  # Å: the Heisenberg baseline's distance shells, to SevenNet-0's cutoff


def shell_features(atoms, units: np.ndarray | None = None) -> np.ndarray:
    """(S,) per atom, ½ Σ_ij (s_i·s_j − 1) over the pairs in each distance shell, with unit spins s_i (``units``
    (n, 3), zero for no moment; by default the directions of ``magmoms_vector``): the exchange per atom of a
    Heisenberg model with one J per shell, referenced to the parallel order, is this dotted with J (times
    |m|²)."""
    units = directions(atoms) if units is None else units
    first, second, distance = neighbor_list("ijd", atoms, SHELL_CUTOFF)
    shell = np.minimum((distance / SHELL_WIDTH).astype(int), int(SHELL_CUTOFF / SHELL_WIDTH) - 1)
    product = np.einsum("ij,ij->i", units[first], units[second]) - 1.0
    return 0.5 * np.bincount(shell, product, minlength=int(SHELL_CUTOFF / SHELL_WIDTH)) / len(atoms)


def fit_shells(frames: list, energy: np.ndarray) -> np.ndarray:
    """J per shell (eV per unit of :func:`shell_features`) by least squares on the energy-per-atom differences
    of ``frames``' pairs of different orders (``energy``: (B,) eV per frame; minimum-norm where a shell is
    never seen)."""
    pairs = different_orders(frames)
    design = np.array([shell_features(frames[a]) - shell_features(frames[b]) for a, b in pairs])
    counts = np.array([len(atoms) for atoms in frames])
    return np.linalg.lstsq(design, order_pairs(np.asarray(energy), counts, pairs), rcond=None)[0]


def shell_gaps(frames: list, pairs: list[tuple[int, int]], shells: np.ndarray) -> np.ndarray:
    """(P,) the shell model's energy-per-atom differences (eV/atom) of ``pairs`` of ``frames``."""
    return np.array([(shell_features(frames[a]) - shell_features(frames[b])) @ shells for a, b in pairs])


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


def heldout_scores(name: str, predicted: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """:func:`pair_scores` of held-out set ``name``'s pairs, keys prefixed ``{name}_``, with the pairs' ΔE
    (meV/atom, predicted and DFT)."""
    scores = {f"{name}_{key}": value for key, value in pair_scores(predicted, reference).items()}
    return {**scores, f"{name}_pairs_meV": [[round(1000 * p, 2), round(1000 * r, 2)]
                                            for p, r in zip(predicted, reference)]}


def chgnet_magnitude_mae(calculator, labelled) -> float:
    """|m| MAE (μB) of CHGNet's own magnitudes on ``labelled``'s frames against their DFT moments."""
    predicted = np.concatenate([np.abs(row["magmoms"]) for row in calculator.predict(labelled.frames, batch_size=8)])
    return float(np.mean(np.abs(predicted - np.concatenate([magnitudes(m) for m in labelled.magmoms]))))


def predicted_energies(model, graphs: list, batch_size: int = 16) -> np.ndarray:
    out = []
    for begin in range(0, len(graphs), batch_size):
        batch = model.collate(graphs[begin:begin + batch_size])
        out.append(model.forward(batch, forces=False, stress=False).energy.detach().double().cpu().numpy())
    return np.concatenate(out)


def read_heldout(path: Path) -> tuple[Any, list, list[tuple[int, int]], np.ndarray]:
    """A held-out set: its LabelledSet, frames, pairs of different orders and their DFT ΔE (eV/atom)."""
    frames = ase.io.read(path, ":")
    labelled = read_potential_set(frames, forces=True, stress=True, magmoms="vector", what=str(path))
    pairs = different_orders(frames)
    return labelled, frames, pairs, order_pairs(labelled.energy, labelled.n_atoms(), pairs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="capped training set, batch 16, 2 epochs (CPU)")
    parser.add_argument("--methods", nargs="+", default=["zero_shot", "sparse"], choices=["zero_shot", "sparse", "full"])
    parser.add_argument("--seed", type=int, default=0, help="which half of the repeated geometries is the test set")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--head-lr", type=float, default=1e-2,
                        help="the head's learning rate (it trains from its start, unlike the backbone)")
    parser.add_argument("--train", type=Path, help="train on this set of order pairs (extxyz with magmoms_vector; "
                        "bench/fe_orders_dft.py --set training makes one) instead of fe_spin's pool")
    parser.add_argument("--heldout", type=Path, nargs="+", default=[],
                        help="spin-configuration sets no run has seen (extxyz with magmoms_vector; "
                        "bench/fe_orders_dft.py --frames makes them): their pairs of orders are scored too")
    parser.add_argument("-o", "--output", default="bench/out/spin_orders")
    args = parser.parse_args()
    for path in [DATA, args.train, *args.heldout]:
        if path is not None and not path.is_file():
            parser.error(f"no data at {path}")
    parts, groups, pairs = split(ase.io.read(DATA, ":"), args.seed)
    if args.train:
        parts.update(split_by_geometry(ase.io.read(args.train, ":"), args.seed))
    if args.quick:
        rng = np.random.default_rng(args.seed)
        for role, cap in (("train", 96), ("valid", 16)):
            small = [atoms for atoms in parts[role] if len(atoms) <= 16]
            parts[role] = [small[i] for i in sorted(rng.permutation(len(small))[:cap])]
    data = {role: read_potential_set(frames, forces=True, stress=True, magmoms="vector", what=f"fe_spin {role}")
            for role, frames in parts.items()}
    counts = data["test"].n_atoms()
    reference = order_pairs(data["test"].energy, counts, pairs)
    print(f"{', '.join(f'{len(v)} {k}' for k, v in data.items())} frames"
          f"{f' (training and validation from {args.train})' if args.train else ''}; {len(groups)} fe_spin test "
          f"geometries, {len(reference)} pairs of different orders (|ΔE| median "
          f"{1000 * np.median(np.abs(reference)):.1f} meV/atom)", flush=True)
    heldout = {path.stem: read_heldout(path) for path in args.heldout}
    for name, (_, frames, held_pairs, gaps) in heldout.items():
        print(f"held out {name}: {len(frames)} frames, {len(held_pairs)} pairs of different orders (|ΔE| median "
              f"{1000 * np.median(np.abs(gaps)):.1f} meV/atom)", flush=True)
    config = (FinetuneConfig(spin_head="vector", batch_size=16, epochs=2, patience=2, head_lr=args.head_lr)
              if args.quick else FinetuneConfig(spin_head="vector", head_lr=args.head_lr))

    rows = []
    bare = load_backbone("sevennet", device=args.device)
    unlabelled = dataclasses.replace(data["test"], magmoms=None)
    bare_metrics = evaluate(bare, [bare.graph(a) for a in unlabelled.frames], unlabelled, config.loss)
    rows.append({"run": "bare SevenNet-0 (no head: one energy per geometry)", **bare_metrics,
                 **pair_scores(np.zeros_like(reference), reference),
                 **{k: v for name, held in heldout.items() for k, v in heldout_scores(name, 0 * held[3], held[3]).items()}})
    if args.train:
        shells = fit_shells(parts["train"], data["train"].energy)
        rows.append({"run": "Heisenberg model, one J per 0.25 Å shell, fitted to the training pairs",
                     **pair_scores(shell_gaps(parts["test"], pairs, shells), reference),
                     **{k: v for name, held in heldout.items()
                        for k, v in heldout_scores(name, shell_gaps(held[1], held[2], shells), held[3]).items()}})
    runs = [("start (untrained head)", "zero_shot", {"epochs": 0}, (True, False))]
    runs += [(f"{method} + head", method, {}, (True,) if args.quick and method != "zero_shot" else (True, False))
             for method in args.methods]
    runs += [(f"zero_shot + head, {what}", "zero_shot", {option: False}, (True,))  # what J and |m| read
             for what, option in (("J of distance and species only", "exchange_environment"),
                                  ("magnitudes of geometry only", "local_order"))]
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
            held_scores = {}
            for name, (held_set, _, held_pairs, gaps) in heldout.items():
                held_graphs = tuner.graphs(held_set)
                held_predicted = (order_pairs(predicted_energies(tuner.model, held_graphs),
                                              held_set.n_atoms(), held_pairs) if exchange else np.zeros_like(gaps))
                held_scores.update(heldout_scores(name, held_predicted, gaps))
                held_scores.update({f"{name}_{key}": value for key, value in
                                    evaluate(tuner.model, held_graphs, held_set, config.loss).items()})
            row = {"run": f"{label}, {'with' if exchange else 'without'} exchange", **metrics,
                   **pair_scores(predicted, reference), **held_scores,
                   "steps": result.steps, "kept_start": result.kept_start,
                   "seconds": time.perf_counter() - start,
                   "exchange_start": tuner.exchange_start.record() if tuner.exchange_start else None}
            rows.append(row)
            print(f"  {row['run']:45s} E {row['energy_mae']:6.2f} meV/atom  F {row['forces_mae']:6.1f} meV/Å  "
                  f"|m| {row['magmom_magnitude_mae']:.3f} μB  ΔE pairs: MAE {row['pair_mae']:.1f} meV/atom  "
                  f"ρ {row['pair_spearman']:+.2f}  sign {row['pair_sign_agreement']:.2f}  ({result.steps} steps)"
                  + "".join(f"; {name}: MAE {row[f'{name}_pair_mae']:.1f} ρ {row[f'{name}_pair_spearman']:+.2f} "
                            f"sign {row[f'{name}_pair_sign_agreement']:.2f}" for name in heldout), flush=True)

    truth = np.concatenate([magnitudes(m) for m in data["test"].magmoms])
    baselines: dict[str, dict[str, float]] = {}
    train_mean = float(np.mean(np.concatenate([magnitudes(m) for m in data["train"].magmoms])))
    chgnet_calculator = load_calculator("chgnet", device=args.device)
    chgnet_mae = chgnet_magnitude_mae(chgnet_calculator, data["test"])
    for name, (held_set, *_) in heldout.items():
        held_truth = np.concatenate([magnitudes(m) for m in held_set.magmoms])
        baselines[name] = {"mean": float(np.mean(np.abs(held_truth - train_mean))),
                           "chgnet": chgnet_magnitude_mae(chgnet_calculator, held_set)}
    head_step, plain_step = step_times(data["train"], config, args.device)
    report = {"quick": args.quick, "seed": args.seed, "train": str(args.train) if args.train else "fe_spin",
              "heldout": [str(path) for path in args.heldout], "sizes": {k: len(v) for k, v in data.items()},
              "pairs": len(reference), "rows": rows, "per_element_mean_magnitude_mae": float(np.mean(np.abs(truth - train_mean))),
              "chgnet_0.3.0_magnitude_mae": chgnet_mae, "heldout_magnitude_baselines": baselines,
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
        energy = f"{row['energy_mae']:.2f} | {row['forces_mae']:.1f}" if "energy_mae" in row else "– | –"
        print(f"| {row['run']} | {energy} | {moment} | {row['pair_mae']:.1f} | {rho} | {row['pair_sign_agreement']:.2f} |")
    print(f"| Fe's mean training |m| ({train_mean:.2f} μB) for every atom | – | – | "
          f"{report['per_element_mean_magnitude_mae']:.3f} | – | – | – |")
    print(f"| CHGNet 0.3.0 (own magnitudes) | – | – | {chgnet_mae:.3f} | – | – | – |")
    for name, (_, frames, held_pairs, _) in heldout.items():
        print(f"\nheld out {name} ({len(held_pairs)} pairs of orders):\n| run | energy MAE (meV/atom) | "
              "|m| MAE (μB) | ΔE pairs MAE (meV/atom) | ΔE pairs Spearman | pairs ordered as DFT |\n|---|---|---|---|---|---|")
        for row in rows:
            rho = "–" if np.isnan(row[f"{name}_pair_spearman"]) else f"{row[f'{name}_pair_spearman']:+.2f}"
            energy = f"{row[f'{name}_energy_mae']:.1f}" if f"{name}_energy_mae" in row else "–"
            moment = f"{row[f'{name}_magmom_magnitude_mae']:.3f}" if f"{name}_magmom_magnitude_mae" in row else "–"
            print(f"| {row['run']} | {energy} | {moment} | {row[f'{name}_pair_mae']:.1f} | {rho} | "
                  f"{row[f'{name}_pair_sign_agreement']:.2f} |")
        print(f"| Fe's mean training |m| for every atom | – | {baselines[name]['mean']:.3f} | – | – | – |")
        print(f"| CHGNet 0.3.0 (own magnitudes) | – | {baselines[name]['chgnet']:.3f} | – | – | – |")
    print(f"\ntraining step (forward + backward, all weights, one batch): with the head {head_step:.2f} s, "
          f"plain {plain_step:.2f} s, ratio {head_step / plain_step:.2f} (goal ≤ 2)")


if __name__ == "__main__":
    main()
