"""ASE calculators built on the backbone protocol."""

from ase_moma.calculators.batch import predict
from ase_moma.calculators.moma import MomaCalculator
from ase_moma.calculators.property import PropertyCalculator

__all__ = ["MomaCalculator", "PropertyCalculator", "predict"]
