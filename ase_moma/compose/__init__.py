"""MoMa adaptive module composition: kNN proxy, simplex weights, weight-space merge."""

from ase_moma.compose.embeddings import module_embeddings
from ase_moma.compose.knn import knn_proxy, spearman
from ase_moma.compose.merge import merge_safetensors
from ase_moma.compose.weights import WeightSolution, solve_weights

__all__ = ["WeightSolution", "knn_proxy", "module_embeddings", "merge_safetensors", "solve_weights", "spearman"]
