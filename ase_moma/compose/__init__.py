"""MoMa adaptive module composition: embed, kNN proxy, simplex weights, merge, fine-tune."""

from ase_moma.compose.composed import load_composed_backbone, load_composed_model
from ase_moma.compose.composer import compose, replay
from ase_moma.compose.delta_merge import MERGES, merge_deltas
from ase_moma.compose.embeddings import module_embeddings
from ase_moma.compose.finetune import DOWNSTREAM, finetune_composed
from ase_moma.compose.knn import knn_proxy, spearman
from ase_moma.compose.merge import merge_safetensors
from ase_moma.compose.potential import POTENTIAL_STRATEGIES, compose_potential
from ase_moma.compose.potential_weights import solve_potential_weights
from ase_moma.compose.recipe import read_recipe
from ase_moma.compose.strategies import STRATEGIES, strategy_weights
from ase_moma.compose.weights import WeightSolution, solve_weights

__all__ = ["DOWNSTREAM", "MERGES", "POTENTIAL_STRATEGIES", "STRATEGIES", "WeightSolution", "compose",
           "compose_potential", "finetune_composed", "knn_proxy", "load_composed_backbone", "load_composed_model",
           "merge_deltas", "merge_safetensors", "module_embeddings", "read_recipe", "replay",
           "solve_potential_weights", "solve_weights", "spearman", "strategy_weights"]
