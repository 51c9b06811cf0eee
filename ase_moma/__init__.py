"""ase-moma: modular machine-learned interatomic potentials for ASE.

>>> from ase_moma import load_calculator, list_backbones
>>> calc = load_calculator("sevennet")   # embedded SevenNet-0
"""

from __future__ import annotations

from ase_moma.e3nn_tools import prepare_e3nn

prepare_e3nn()  # so e3nn (and sevenn, mace) import under torch >= 2.6 in this process

from ase_moma.loading import load_backbone, load_calculator  # noqa: E402
from ase_moma.registry import BackboneInfo, list_backbones  # noqa: E402
from ase_moma.version import __version__  # noqa: E402

__all__ = ["BackboneInfo", "list_backbones", "load_backbone", "load_calculator", "__version__"]
