"""The composition view: Magpie element-property statistics (matminer's ``ElementProperty``).

For each of Magpie's 22 element properties (atomic number, Mendeleev number, mass, melting point,
column, row, covalent radius, electronegativity, valence electrons by orbital, unfilled orbitals,
ground-state volume and band gap, magnetic moment, space group), the composition-weighted minimum,
maximum, range, mean, mean absolute deviation and mode: 132 numbers per structure, the features
matbench's composition baselines use. Frozen, and cheap (about a millisecond per structure).
"""

from __future__ import annotations

import hashlib
from importlib.metadata import version
from typing import Any, Sequence

import numpy as np
from ase import Atoms

from ase_moma.modalities.base import Encoded, Modality


class CompositionModality(Modality):
    """Magpie statistics of each structure's composition (132 features)."""

    name = "composition"

    def __init__(self) -> None:
        from matminer.featurizers.composition import ElementProperty

        self._featurizer = ElementProperty.from_preset("magpie", impute_nan=True)
        self._labels = self._featurizer.feature_labels()

    @property
    def width(self) -> int:
        return len(self._labels)

    def labels(self) -> list[str]:
        """The 132 feature names, in order (``"MagpieData mean Electronegativity"``, ...)."""
        return list(self._labels)

    def encode(self, structures: Sequence[Atoms]) -> Encoded:
        from pymatgen.core import Composition

        features = np.zeros((len(structures), self.width))
        present = np.zeros(len(structures), dtype=bool)
        missing: dict[int, str] = {}
        for row, atoms in enumerate(structures):
            try:
                values = self._featurizer.featurize(Composition(atoms.get_chemical_formula()))
            except Exception as error:  # an element Magpie lacks, say: this view is missing, not the run
                missing[row] = f"{type(error).__name__}: {error}"
                continue
            values = np.asarray(values, dtype=np.float64)
            if not np.isfinite(values).all():
                missing[row] = "Magpie has no value for an element of this composition"
                continue
            features[row], present[row] = values, True
        return Encoded(features, present, missing)

    def identity(self) -> dict[str, Any]:
        digest = hashlib.sha256()
        probe = self._featurizer.featurize(_composition("NaCl"))  # the table's values, through one composition
        digest.update(np.asarray(probe, dtype=np.float64).tobytes())
        digest.update("\n".join(self._labels).encode())
        return {"name": self.name, "encoder": "matminer ElementProperty (magpie preset)",
                "version": version("matminer"), "sha256": digest.hexdigest()}


def _composition(formula: str):
    from pymatgen.core import Composition

    return Composition(formula)
