"""ASE calculators built on the backbone protocol."""

from ase_moma.calculators.batch import predict
from ase_moma.calculators.moma import MomaCalculator

__all__ = ["MomaCalculator", "predict"]
