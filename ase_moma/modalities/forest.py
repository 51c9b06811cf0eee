"""A tree ensemble fitted on one view, kept as arrays: the non-linear expert of that view in a fusion head.

On a hundred structures a gradient-trained read-out of 132 composition statistics learns little, while
a random forest on the same statistics is matbench's strongest simple baseline. The forest is grown by
scikit-learn at training time and then stored as plain arrays (safetensors, no pickle): per node its
feature, threshold, children and value. Prediction walks the arrays in numpy, so a saved model needs no
scikit-learn to load, and what it computes is visible.

Gradient boosting (:meth:`Forest.fit_boosted`) is stored the same way: its trees' leaf values summed,
scaled by the learning rate and added to the initial constant, where a forest averages them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

TREES = 100
"""Trees per forest: the error of a forest's mean flattens out well before 100 trees on data of this
size, and 100 keeps a forest of a thousand structures to a few megabytes."""
MIN_LEAF = 2
"""Fewest training structures per leaf: one-structure leaves memorise single outliers (heavy-tailed
targets such as exfoliation energies have them), two halve the stored nodes."""
BOOSTING = {"n_estimators": 1000, "learning_rate": 0.05, "max_depth": 3, "subsample": 0.8,
            "validation_fraction": 0.1, "n_iter_no_change": 20}
"""Gradient boosting as the composition baseline runs it (depth 3, learning rate 0.05, 80 % subsamples, at
most 1000 trees), its number of trees found by scikit-learn's early stopping on a tenth of the training
structures, so no validation or test structure chooses it."""


@dataclass
class Forest:
    """Node arrays of all trees laid end to end; ``roots`` (T,) index each tree's first node.

    feature: (N,) int64, −1 at a leaf; threshold: (N,) float64 (go left when x[feature] ≤ threshold);
    left, right: (N,) int64 global node indices; value: (N,) float64, the node's value.
    combine: (2,) float64 ``(offset, scale)``: a prediction is offset + scale · Σ_trees leaf value; a forest
    is (0, 1/T), its mean; boosting is (initial constant, learning rate).
    """

    roots: np.ndarray
    feature: np.ndarray
    threshold: np.ndarray
    left: np.ndarray
    right: np.ndarray
    value: np.ndarray
    combine: np.ndarray

    @property
    def kind(self) -> str:
        """``"forest"`` (the mean of its trees) or ``"boosted"``."""
        return "forest" if self.combine[0] == 0 and np.isclose(self.combine[1] * len(self.roots), 1) else "boosted"

    @classmethod
    def fit(cls, features: np.ndarray, targets: np.ndarray, seed: int = 0) -> "Forest":
        """Grow TREES trees (scikit-learn's RandomForestRegressor, bootstrap, MIN_LEAF) on (M, F) features."""
        from sklearn.ensemble import RandomForestRegressor

        grown = RandomForestRegressor(n_estimators=TREES, min_samples_leaf=MIN_LEAF, random_state=seed, n_jobs=1)
        grown.fit(np.asarray(features, dtype=np.float64), np.asarray(targets, dtype=np.float64))
        return cls._from_trees([estimator.tree_ for estimator in grown.estimators_], 0.0,
                               1.0 / len(grown.estimators_))

    @classmethod
    def fit_boosted(cls, features: np.ndarray, targets: np.ndarray, seed: int = 0) -> "Forest":
        """Gradient boosting (scikit-learn's GradientBoostingRegressor with BOOSTING) on (M, F) features."""
        from sklearn.ensemble import GradientBoostingRegressor

        grown = GradientBoostingRegressor(random_state=seed, **BOOSTING)
        grown.fit(np.asarray(features, dtype=np.float64), np.asarray(targets, dtype=np.float64))
        start = float(np.ravel(grown.init_.constant_)[0])
        return cls._from_trees([estimator.tree_ for estimator in grown.estimators_[:, 0]], start,
                               float(grown.learning_rate))

    @classmethod
    def _from_trees(cls, trees: list, offset_value: float, scale: float) -> "Forest":
        """The node arrays of scikit-learn ``trees`` laid end to end."""
        parts, roots, offset = [], [], 0
        for tree in trees:
            leaf = tree.children_left < 0
            shift = np.where(leaf, -1, offset)
            parts.append((np.where(leaf, -1, tree.feature), tree.threshold, tree.children_left + shift,
                          tree.children_right + shift, tree.value[:, 0, 0]))
            roots.append(offset)
            offset += tree.node_count
        feature, threshold, left, right, value = (np.concatenate(column) for column in zip(*parts))
        return cls(np.array(roots, dtype=np.int64), feature.astype(np.int64), threshold.astype(np.float64),
                   left.astype(np.int64), right.astype(np.int64), value.astype(np.float64),
                   np.array([offset_value, scale]))

    def predict(self, features: np.ndarray) -> np.ndarray:
        """(M,) offset + scale · Σ over trees of each row's leaf value, for (M, F) features."""
        x = np.asarray(features, dtype=np.float64)
        rows = np.arange(len(x))
        node = np.repeat(self.roots[None, :], len(x), axis=0)  # (M, T)
        while True:
            inner = self.feature[node] >= 0
            if not inner.any():
                return self.combine[0] + self.combine[1] * self.value[node].sum(axis=1)
            values = x[rows[:, None], np.where(inner, self.feature[node], 0)]
            step = np.where(values <= self.threshold[node], self.left[node], self.right[node])
            node = np.where(inner, step, node)

    def tensors(self, prefix: str) -> dict[str, torch.Tensor]:
        """The arrays as tensors named ``prefix + field``, for a safetensors file."""
        return {prefix + name: torch.from_numpy(np.ascontiguousarray(getattr(self, name)))
                for name in ("roots", "feature", "threshold", "left", "right", "value", "combine")}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], prefix: str) -> "Forest":
        """The forest stored by :meth:`tensors`; ValueError naming what is wrong when the arrays do not fit.
        (A forest saved before boosting lacks ``combine``: module.json's migration supplies it.)"""
        try:
            arrays = {name: tensors[prefix + name].numpy() for name in ("roots", "feature", "threshold", "left",
                                                                        "right", "value", "combine")}
        except KeyError as error:
            raise ValueError(f"the forest {prefix!r} lacks {error.args[0]}") from None
        nodes = len(arrays["feature"])
        inner = arrays["feature"] >= 0
        links = np.concatenate([arrays["left"][inner], arrays["right"][inner], arrays["roots"]])
        if any(len(arrays[name]) != nodes for name in ("threshold", "left", "right", "value")) or \
                (links.size and (links.min() < 0 or links.max() >= nodes)):
            raise ValueError(f"the forest {prefix!r} has node arrays that do not fit together")
        if arrays["combine"].shape != (2,):
            raise ValueError(f"the forest {prefix!r} has a combine of shape {arrays['combine'].shape}, not (2,)")
        return cls(**{**arrays, "combine": arrays["combine"].astype(np.float64)})
