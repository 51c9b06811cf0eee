"""MoMa adaptive module composition: embed, kNN proxy, simplex weights, merge, fine-tune.

The names below are imported on first use, so that loading a composed model
(:mod:`ase_moma.compose.composed`) imports no training code.
"""

from __future__ import annotations

from ase_moma.lazy_names import imported_on_first_use

_WHERE = {"DOWNSTREAM": ".finetune", "MERGES": ".delta_merge", "POTENTIAL_STRATEGIES": ".potential", "STRATEGIES":
          ".strategies", "WeightSolution": ".weights", "compose": ".composer", "compose_potential":
          ".potential", "finetune_composed": ".finetune", "knn_proxy": ".knn", "load_composed_backbone":
          ".composed", "load_composed_model": ".composed", "merge_deltas": ".delta_merge", "merge_safetensors":
          ".merge", "module_embeddings": ".embeddings", "read_recipe": ".recipe", "replay": ".composer",
          "solve_potential_weights": ".potential_weights", "solve_weights": ".weights", "spearman": ".knn",
          "strategy_weights": ".strategies"}

__all__ = sorted(_WHERE)

__getattr__ = imported_on_first_use(__name__, _WHERE)
