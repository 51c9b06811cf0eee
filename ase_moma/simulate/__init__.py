"""Many structures at once: relaxations and molecular dynamics advanced together, one batched model
call per step for every system still running."""

from ase_moma.simulate.evaluator import BatchEvaluator, BatchedCalculator
from ase_moma.simulate.md import run_md_many
from ase_moma.simulate.relax import relax_many

__all__ = ["BatchEvaluator", "BatchedCalculator", "relax_many", "run_md_many"]
