"""Labelled structures for fine-tuning a potential: DFT energies, forces and stress.

Labels are read the way ASE stores them (``atoms.get_potential_energy()``,
``get_forces()``, ``get_stress()``; extended XYZ puts them there): eV, eV/Å,
and stress with ASE's sign in the unit the user declares (eV/Å³ by default,
or GPa or kbar, converted on reading). Frames whose stress exceeds a bound can
be dropped (reported); :func:`check_stress_unit` compares the labels with a
backbone's own predictions and refuses a file whose declared unit the data
contradicts. Every check names the file and frame at fault.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
from ase import Atoms, units
from ase.stress import voigt_6_to_full_3x3_stress

from ase_moma.labelled_set import LabelledSet
from ase_moma.structures import has_volume, read_structures

# Declared stress units and their value in eV/Å³ (ASE's unit).
STRESS_UNITS = {"eV/A^3": 1.0, "GPa": units.GPa, "kbar": units.GPa / 10}


def read_potential_set(source: str | Path | Sequence[Atoms], *, forces: bool, stress: bool,
                       what: str = "data", magmoms: str | None = None, stress_unit: str = "eV/A^3",
                       max_stress: float | None = None) -> LabelledSet:
    """Read and check a labelled set.

    source: a file any ase.io format reads, or frames with a calculator holding
    the labels. forces, stress: whether those labels are needed (their loss
    weight is positive); a frame without them is an error that names it.
    what: the set's role (``"training set"``), for messages. magmoms:
    ``"vector"`` or ``"collinear"`` to read per-atom moments (see :func:`frame_moments`).
    stress_unit: the unit the file's stresses are in (a key of STRESS_UNITS),
    converted to eV/Å³. max_stress: drop frames with a stress component above
    this many eV/Å³ (after conversion); they are listed in ``dropped``.
    """
    if stress_unit not in STRESS_UNITS:
        raise ValueError(f"unknown stress unit {stress_unit!r}; choose one of {', '.join(STRESS_UNITS)}")
    if max_stress is not None and not max_stress > 0:
        raise ValueError(f"the stress bound must be positive, got {max_stress}")
    if isinstance(source, (str, Path)):
        frames, name = read_structures(source, what), str(source)
    else:
        frames, name = list(source), f"the {what}"
    if not frames:
        raise ValueError(f"{name} holds no structures; fine-tuning needs at least one")
    stresses = ([_stress(atoms, i, name) * STRESS_UNITS[stress_unit] for i, atoms in enumerate(frames)]
                if stress else None)
    kept, dropped = list(range(len(frames))), []
    if stresses is not None and max_stress is not None:
        dropped = [i for i in kept if np.abs(stresses[i]).max() > max_stress]
        kept = sorted(set(kept) - set(dropped))
        if not kept:
            raise ValueError(f"every frame of {name} has a stress above {max_stress} eV/Å³; nothing is left")
    return LabelledSet(
        frames=[frames[i] for i in kept], source=name, indices=kept,
        energy=np.array([_energy(frames[i], i, name) for i in kept]),
        forces=[_forces(frames[i], i, name) for i in kept] if forces else None,
        stress=np.stack([stresses[i] for i in kept]) if stresses is not None else None,
        magmoms=[frame_moments(frames[i], magmoms, f"frame {i} of {name}") for i in kept] if magmoms else None,
        dropped=dropped,
    )


def check_stress_unit(predicted: np.ndarray, data: LabelledSet, stress_unit: str = "eV/A^3") -> None:
    """Refuse labels whose scale contradicts the declared unit, naming the frames and the fix.

    predicted: (B, 3, 3) a backbone's stresses (eV/Å³) for ``data``'s frames.
    A foundation potential's stress is rarely off by more than a few times, so
    labels about 160× (or 1600×) the predictions were written in GPa (or kbar)
    though declared eV/Å³, and labels about 1/160 (1/1600) of them were eV/Å³
    declared as GPa (kbar). Only the mistakes the declared unit allows are
    looked for: labels in eV/Å³ that are small beside the predictions (a set of
    nearly relaxed cells) are not taken for a unit error. Frames whose predicted
    stress is below 1e-3 eV/Å³ (0.16 GPa) say nothing about the unit and are not used.
    """
    if data.stress is None:
        return
    informative = [i for i in range(len(data)) if np.abs(predicted[i]).max() > 1e-3]
    if not informative:
        return
    ratios = {i: float(np.sum(data.stress[i] * predicted[i]) / np.sum(predicted[i] ** 2)) for i in informative}
    overall = float(np.median(list(ratios.values())))
    suspects = {"eV/A^3": ((1 / units.GPa, "GPa", "GPa"), (10 / units.GPa, "kbar", "kbar")),  # scale, unit, flag
                "GPa": ((units.GPa, "eV/Å³", "eV/A^3"),),
                "kbar": ((units.GPa / 10, "eV/Å³", "eV/A^3"),)}[stress_unit]
    for factor, looks_like, flag in suspects:
        if factor / 2 < overall < factor * 2:
            frames = [i for i, r in ratios.items() if factor / 2 < r < factor * 2]
            hint = f"--stress-unit {flag}"
            raise ValueError(
                f"the stress labels of {data.source} are about {overall:.4g}× what the backbone predicts "
                f"(frames {', '.join(map(str, frames[:8]))}{' …' if len(frames) > 8 else ''}), though declared "
                f"{_declared(stress_unit)}: they look like {looks_like}. If so, pass {hint}; if the "
                "unit is right, pass --no-stress-check to train on them as they are")


def _declared(stress_unit: str) -> str:
    return "eV/Å³" if stress_unit == "eV/A^3" else stress_unit


def frame_moments(atoms: Atoms, kind: str, where: str) -> np.ndarray:
    """Per-atom magnetic moments (μB) of one frame: (N, 3) for ``"vector"``, (N,) for ``"collinear"``.

    Vectors come from ``arrays["magmoms_vector"]`` or an (N, 3) ``magmoms``
    result; scalars from an (N,) ``magmoms`` result or ``arrays["magmoms"]``,
    else from the vectors, signed by their projection on the frame's largest
    moment (so antiparallel moments are negative).
    """
    results = _results(atoms)
    found = [np.asarray(v, dtype=np.float64) for v in (atoms.arrays.get("magmoms_vector"), results.get("magmoms"),
                                                        atoms.arrays.get("magmoms")) if v is not None]
    vectors = next((v for v in found if v.shape == (len(atoms), 3)), None)
    scalars = next((v for v in found if v.shape == (len(atoms),)), None)
    if kind == "collinear" and scalars is None and vectors is not None:
        axis = vectors[np.argmax(np.linalg.norm(vectors, axis=1))]
        scalars = np.linalg.norm(vectors, axis=1) * np.sign(vectors @ axis + (vectors @ axis == 0))
    value = vectors if kind == "vector" else scalars
    if value is None:
        wanted = "arrays['magmoms_vector'] (N×3)" if kind == "vector" else "per-atom magmoms (N or N×3)"
        raise ValueError(f"{where} has no magnetic moments ({wanted}), but the spin head is trained on them")
    if not np.all(np.isfinite(value)):
        raise ValueError(f"{where} has non-finite magnetic moments")
    return value


def _results(atoms: Atoms) -> dict:
    return atoms.calc.results if atoms.calc is not None else {}


def _energy(atoms: Atoms, index: int, name: str) -> float:
    value = _results(atoms).get("energy", _results(atoms).get("free_energy"))
    if value is None:
        raise ValueError(f"frame {index} of {name} has no energy label (extended XYZ: energy=... in the "
                         "comment line)")
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"frame {index} of {name} has a non-finite energy ({value})")
    return value


def _forces(atoms: Atoms, index: int, name: str) -> np.ndarray:
    value = _results(atoms).get("forces")
    if value is None:
        raise ValueError(f"frame {index} of {name} has no forces, but the forces are weighted in the loss; "
                         "label every frame or set the forces weight to 0")
    value = np.asarray(value, dtype=np.float64)
    if value.shape != (len(atoms), 3) or not np.all(np.isfinite(value)):
        raise ValueError(f"frame {index} of {name}: forces must be finite with shape ({len(atoms)}, 3), "
                         f"got shape {value.shape}")
    return value


def _stress(atoms: Atoms, index: int, name: str) -> np.ndarray:
    value = _results(atoms).get("stress")
    if value is None:
        raise ValueError(f"frame {index} of {name} has no stress (in eV/Å³), but the stress is weighted in "
                         "the loss; label every frame or set the stress weight to 0")
    if not has_volume(atoms):
        raise ValueError(f"frame {index} of {name} has a stress label but no three-dimensional cell")
    value = np.asarray(value, dtype=np.float64)
    if value.shape == (6,):
        value = voigt_6_to_full_3x3_stress(value)
    if value.shape != (3, 3) or not np.all(np.isfinite(value)):
        raise ValueError(f"frame {index} of {name}: stress must be finite, Voigt (6,) or (3, 3)")
    return value


def label_frames(frames: Sequence[Atoms], calculator: Any) -> list[Atoms]:
    """Copies of ``frames`` labelled by an ASE ``calculator`` (energy, forces, and stress where the
    cell is three-dimensional), stored as single-point results the way extended XYZ reads them back."""
    from ase.calculators.singlepoint import SinglePointCalculator

    labelled = []
    for atoms in frames:
        atoms = atoms.copy()
        atoms.calc = calculator
        results = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
        if has_volume(atoms):
            results["stress"] = atoms.get_stress()
        atoms.calc = SinglePointCalculator(atoms, **results)
        labelled.append(atoms)
    return labelled


def split_frames(frames: Sequence[Atoms], fractions: tuple[float, float, float], seed: int
                 ) -> tuple[list[Atoms], list[Atoms], list[Atoms]]:
    """A seeded random train/validation/test partition of ``frames`` by ``fractions`` (summing to 1)."""
    if abs(sum(fractions) - 1) > 1e-9 or min(fractions) < 0:
        raise ValueError(f"split fractions must be non-negative and sum to 1, got {fractions}")
    order = np.random.default_rng(seed).permutation(len(frames))
    n_train = int(round(fractions[0] * len(frames)))
    n_val = int(round(fractions[1] * len(frames)))
    parts = order[:n_train], order[n_train:n_train + n_val], order[n_train + n_val:]
    return tuple([frames[i] for i in part] for part in parts)
