"""Leave-one-out kNN label propagation in a module's embedding space (MoMa Eq. 1)."""

from __future__ import annotations

import numpy as np
import torch

SIMILARITIES = ("cosine", "dot", "euclidean")


def knn_proxy(embeddings: torch.Tensor | np.ndarray, targets: torch.Tensor | np.ndarray, k: int = 5,
              temperature: float = 0.2, similarity: str = "cosine", chunk_size: int = 2048,
              device: str | torch.device | None = None) -> np.ndarray:
    """(M,) leave-one-out predictions ŷ_i = Σ_{k∈N_i} a_ik y_k / Σ_{k∈N_i} a_ik.

    embeddings: (M, F) one vector per structure; targets: (M,). N_i holds the
    ``k`` most similar other structures (self excluded); a_ik = exp(s_ik / T)
    with s the ``similarity`` (cosine, dot product, or negative Euclidean
    distance). Rows are processed ``chunk_size`` at a time, so memory is
    O(M · chunk_size), in float64 on ``device`` (default: the embeddings').
    """
    if similarity not in SIMILARITIES:
        raise ValueError(f"similarity must be one of {', '.join(SIMILARITIES)}, got {similarity!r}")
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    x = torch.as_tensor(embeddings)
    device = torch.device(device) if device is not None else x.device
    x = x.to(device=device, dtype=torch.float64)
    y = torch.as_tensor(targets).to(device=device, dtype=torch.float64).reshape(-1)
    if x.ndim != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f"embeddings must be (M, F) with M = len(targets) = {y.shape[0]}, got {tuple(x.shape)}")
    if not torch.isfinite(y).all():
        bad = torch.nonzero(~torch.isfinite(y)).flatten()[:5].tolist()
        raise ValueError(f"targets must be finite; structures {bad} are not")
    if not torch.isfinite(x).all():
        raise ValueError("embeddings contain NaN or inf")
    m = x.shape[0]
    if not 1 <= k < m:
        raise ValueError(f"kNN with K={k} needs at least K+1={k + 1} structures, got {m}")
    if similarity == "cosine":
        x = x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)
    squared = (x * x).sum(1)
    predictions = torch.empty(m, dtype=torch.float64, device=device)
    for start in range(0, m, chunk_size):
        rows = torch.arange(start, min(start + chunk_size, m), device=device)
        scores = x[rows] @ x.T
        if similarity == "euclidean":
            scores = -(squared[rows, None] - 2 * scores + squared[None, :]).clamp_min(0).sqrt()
        scores[torch.arange(len(rows), device=device), rows] = -torch.inf
        top = scores.topk(k, dim=1)
        weights = torch.softmax(top.values / temperature, dim=1)  # exp(s/T) row-normalised, overflow-safe
        predictions[rows] = (weights * y[top.indices]).sum(1)
    return predictions.cpu().numpy()


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two 1-D arrays (average ranks for ties)."""
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)
