"""The structure view: statistics of the geometry that a pooled graph embedding blurs.

Twenty numbers per crystal, in the spirit of matminer's density, bond-length and symmetry
featurizers, but from ASE and spglib alone and in a few milliseconds:

- volume per atom (Å³), density (g/cm³), packing fraction (covalent-radius spheres over the volume);
- each atom's nearest-neighbour distance (Å): minimum, mean, maximum and standard deviation over atoms;
- the same distance over the sum of the two covalent radii (how tight the closest bond is): the four
  statistics;
- coordination numbers, counting neighbours closer than BOND_TOLERANCE times the sum of covalent
  radii: the four statistics;
- the widest empty slab between lattice planes (Å), for each of the three plane families of the
  Niggli-reduced primitive cell, widest first: a layered crystal has one wide gap (its van der Waals gap), a
  molecular crystal three;
- the space group number and the order of the point group (spglib, SYMPREC).

Each is unchanged by a rotation, a translation or a repetition of the cell. A mean-pooled graph
embedding averages atoms' environments, so extremes (a long gap, the loosest bond) and the cell's
density are what it carries least. A structure without a full periodic cell gets a missing view.
"""

from __future__ import annotations

import hashlib
import warnings
from importlib.metadata import version
from typing import Any, Sequence

import numpy as np
from ase import Atoms
from ase.data import atomic_masses, covalent_radii

from ase_moma.modalities.base import Encoded, Modality

BOND_TOLERANCE = 1.25
"""Two atoms are bonded when closer than this times the sum of their covalent radii: the usual allowance
for covalent radii (ASE's natural cutoffs and pymatgen's bond checks use 1.1–1.3)."""
SEARCH = 6.0  # Å: nearest neighbours are looked for this far; an atom with none nearer reads 6.0
SYMPREC = 0.1  # Å: spglib's tolerance, loose enough for relaxed DFT structures
AMU_PER_A3_IN_G_PER_CM3 = 1.66053906660
STATISTICS = ("min", "mean", "max", "std")
LABELS = (["volume per atom (Å³)", "density (g/cm³)", "packing fraction"]
          + [f"nearest distance {s} (Å)" for s in STATISTICS]
          + [f"nearest distance / covalent sum {s}" for s in STATISTICS]
          + [f"coordination {s}" for s in STATISTICS]
          + [f"empty slab {k} (Å)" for k in ("widest", "second", "narrowest")]
          + ["space group number", "point group order"])


class StructureModality(Modality):
    """Geometry statistics of each crystal (20 features, see the module's docstring)."""

    name = "structure"

    @property
    def width(self) -> int:
        return len(LABELS)

    def labels(self) -> list[str]:
        return list(LABELS)

    def encode(self, structures: Sequence[Atoms]) -> Encoded:
        features = np.zeros((len(structures), self.width))
        present = np.zeros(len(structures), dtype=bool)
        missing: dict[int, str] = {}
        for row, atoms in enumerate(structures):
            if not atoms.pbc.all() or atoms.cell.rank < 3:
                missing[row] = "the structure view needs a crystal: this structure has no full periodic cell"
                continue
            features[row], present[row] = geometry_statistics(atoms), True
        return Encoded(features, present, missing)

    def identity(self) -> dict[str, Any]:
        digest = hashlib.sha256("\n".join(LABELS).encode())
        digest.update(np.array([BOND_TOLERANCE, SEARCH, SYMPREC]).tobytes())
        digest.update(np.asarray(covalent_radii, dtype=np.float64).tobytes())
        digest.update(np.asarray(atomic_masses, dtype=np.float64).tobytes())
        return {"name": self.name, "encoder": "ase-moma geometry statistics", "ase": version("ase"),
                "spglib": version("spglib"), "sha256": digest.hexdigest()}


def geometry_statistics(atoms: Atoms) -> np.ndarray:
    """(20,) the features of one periodic structure, in the order of LABELS."""
    from ase.neighborlist import neighbor_list

    count, volume = len(atoms), atoms.get_volume()
    radii = covalent_radii[atoms.numbers]
    values = [volume / count, atomic_masses[atoms.numbers].sum() / volume * AMU_PER_A3_IN_G_PER_CM3,
              float((4 / 3 * np.pi * radii ** 3).sum() / volume)]
    first, second, distance = neighbor_list("ijd", atoms, SEARCH)
    tightness = distance / (radii[first] + radii[second])
    nearest, nearest_tightness = np.full(count, SEARCH), np.full(count, SEARCH / (2 * radii.min()))
    np.minimum.at(nearest, first, distance)
    np.minimum.at(nearest_tightness, first, tightness)
    coordination = np.bincount(first[tightness < BOND_TOLERANCE], minlength=count)
    for quantity in (nearest, nearest_tightness, coordination):
        values += _statistics(quantity)
    with warnings.catch_warnings():  # spglib's notice about its error handling is for library authors
        warnings.filterwarnings("ignore", message="Set OLD_ERROR_HANDLING to false", category=DeprecationWarning)
        values += _empty_slabs(atoms)
        values += _symmetry(atoms)
    return np.asarray(values, dtype=np.float64)


def _statistics(values: np.ndarray) -> list[float]:
    values = np.asarray(values, dtype=np.float64)
    return [float(values.min()), float(values.mean()), float(values.max()), float(values.std())]


def _empty_slabs(atoms: Atoms) -> list[float]:
    """The widest gap (Å) between atoms' planes for each lattice-plane family of the primitive cell (spglib,
    SYMPREC; the cell as given where it finds none), Niggli-reduced, widest first."""
    import spglib
    from ase.build import niggli_reduce

    primitive = spglib.standardize_cell((atoms.cell.array, atoms.get_scaled_positions(), atoms.numbers),
                                        to_primitive=True, no_idealize=True, symprec=SYMPREC)
    reduced = atoms.copy() if primitive is None else Atoms(numbers=primitive[2], scaled_positions=primitive[1],
                                                             cell=primitive[0], pbc=True)
    niggli_reduce(reduced)
    spacing = 1 / np.linalg.norm(reduced.cell.reciprocal(), axis=1)  # Å between the planes of each family
    fractions = reduced.get_scaled_positions() % 1.0
    gaps = []
    for axis in range(3):
        levels = np.sort(fractions[:, axis])
        gaps.append(float(np.diff(np.concatenate([levels, levels[:1] + 1])).max() * spacing[axis]))
    return sorted(gaps, reverse=True)


def _symmetry(atoms: Atoms) -> list[float]:
    """Space group number and point-group order (1 and 1 where spglib finds none). The order is counted
    from the space group's own operations, so a repeated cell, whose lattice may lose some, reads the same."""
    import spglib

    cell = (atoms.cell.array, atoms.get_scaled_positions(), atoms.numbers)
    dataset = spglib.get_symmetry_dataset(cell, symprec=SYMPREC)
    if dataset is None:
        return [1.0, 1.0]
    operations = spglib.get_symmetry_from_database(dataset.hall_number)
    rotations = {rotation.tobytes() for rotation in np.asarray(operations["rotations"], dtype=np.int64)}
    return [float(dataset.number), float(len(rotations))]
