"""ase-moma: modular machine-learned interatomic potentials for ASE.

>>> from ase_moma import load_calculator, list_backbones
>>> calc = load_calculator("sevennet")   # embedded SevenNet-0
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

from ase_moma.e3nn_tools import prepare_e3nn
from ase_moma.registry import BackboneInfo, list_backbones, load_backbone

prepare_e3nn()  # so e3nn (and sevenn, mace) import under torch >= 2.6 in this process

try:
    __version__ = version("ase-moma")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"


def load_calculator(name: str, source: str | None = None, *, device: str = "auto",
                    dtype: str = "float32", **options: Any):
    """An ASE calculator for backbone ``name``, or for a composed model's folder.

    name: a registered backbone, or an ``ase-moma compose`` output folder: once
    fine-tuned, its calculator predicts the task's target
    (``calc.get_property(target, atoms)``); before, it is the merged backbone's
    energy/forces/stress calculator.
    source: None for the embedded default weights, else a local checkpoint path.
    device: ``"auto"`` (cuda when available), ``"cpu"`` or ``"cuda"``.
    dtype: ``"float32"`` or ``"float64"``. options: plugin-specific loading
    options (e.g. ``trust_pickle=True`` for a pickled mace ``.model`` file).
    """
    from ase_moma.calculators import MomaCalculator, PropertyCalculator
    from ase_moma.compose.composed import is_composed, is_finetuned, load_composed_model

    if is_composed(name) and is_finetuned(name):
        return PropertyCalculator(load_composed_model(name, device=device, dtype=dtype))
    return MomaCalculator(load_backbone(name, source, device=device, dtype=dtype, **options))


__all__ = ["BackboneInfo", "list_backbones", "load_backbone", "load_calculator", "__version__"]
