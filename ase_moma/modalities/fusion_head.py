"""A fusion head that starts where the graph model is and can only add.

Each view v (the graph's pooled features and every other modality's) is standardised (z_v),
projected to a common width and becomes one token t_v; a view a structure lacks is replaced by that
view's learned missing token. A learned query attends over the tokens of each structure, so the
weights g_v it gives the views (the gates, reported per structure) say which views it read. The
output is

    y = y_graph + V · Σ_v g_v · (w_v · z_v + b_v) + mlp(Σ_v g_v · t_v),

a per-structure gated sum of one linear read-out per view, plus a non-linear read-out of the fused
token. Both start at zero: before training the head is exactly the graph-only model it was built on,
so whatever guarantee that model has (never below its probe on validation) holds at the start. With
the query at zero every gate is 1/V, so the linear part is then a plain linear model of the
concatenated views, which :meth:`FusionHead.set_linear` sets (to a ridge fit of the graph model's
residuals: LP-FT's linear start, for the correction).

During training, each non-graph view of a structure is dropped with probability ``modality_dropout``
(its missing token and missing value stand in), so the head keeps working when a view is missing at
prediction time.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch

from ase_moma.modalities.registry import GRAPH

CONSTANT = "constant"
INTERACTION = "interaction"
CLIP = 10.0
"""Largest |z-score| a read-out sees: a feature far outside anything seen in training (a column constant on
a small training set, an element no training structure had) cannot extrapolate a linear read-out without
bound; ten standard deviations keeps every value a training distribution would plausibly produce."""


class FusionHead(torch.nn.Module):
    """Adds a fused correction to a graph-only prediction.

    graph_width: G, the graph features' length; widths: ``{modality name: F}`` of the other views;
    width: the common token width; modality_dropout: the probability a non-graph view of a structure
    is dropped during training.
    """

    def __init__(self, graph_width: int, widths: Mapping[str, int], width: int = 64,
                 modality_dropout: float = 0.1) -> None:
        super().__init__()
        if GRAPH in widths:
            raise ValueError(f"{GRAPH!r} is the graph view's own name; name the other views differently")
        if not 0 <= modality_dropout < 1:
            raise ValueError(f"modality dropout must lie in [0, 1), got {modality_dropout}")
        self.names = [GRAPH, *sorted(widths)]
        sizes = {GRAPH: graph_width, **widths}
        self.modality_dropout = modality_dropout
        self.project = torch.nn.ModuleDict({name: torch.nn.Linear(sizes[name], width) for name in self.names})
        self.missing = torch.nn.ParameterDict({name: torch.nn.Parameter(torch.zeros(width)) for name in self.names})
        self.linear = torch.nn.ModuleDict({name: torch.nn.Linear(sizes[name], 1) for name in self.names})
        self.missing_value = torch.nn.ParameterDict({name: torch.nn.Parameter(torch.zeros(1)) for name in self.names})
        for name in self.names:
            self.register_buffer(f"mean_{name}", torch.zeros(sizes[name]))
            self.register_buffer(f"scale_{name}", torch.ones(sizes[name]))
        self.key = torch.nn.Linear(width, width)
        self.query = torch.nn.Parameter(torch.zeros(width))
        self.correction = torch.nn.Sequential(torch.nn.Linear(width, width), torch.nn.SiLU(), torch.nn.Linear(width, 1))
        with torch.no_grad():
            for layer in (self.correction[-1], *self.linear.values()):
                layer.weight.zero_()
                layer.bias.zero_()

    @torch.no_grad()
    def fit_normalisation(self, features: Mapping[str, torch.Tensor], present: Mapping[str, torch.Tensor]) -> None:
        """Standardise each view by its training mean and standard deviation over the structures that have it.

        features: ``{name: (B, F)}`` for the graph and every other view; present: ``{name: (B,) bool}``.
        """
        for name in self.names:
            rows = features[name][present[name]] if name in present else features[name]
            if len(rows) == 0:
                raise ValueError(f"no training structure has the {name} view")
            getattr(self, f"mean_{name}").copy_(rows.mean(0))
            spread = rows.std(0, unbiased=False)
            getattr(self, f"scale_{name}").copy_(torch.where(spread > 1e-8, spread, torch.ones_like(spread)))

    @torch.no_grad()
    def standardised_blocks(self, features: Mapping[str, torch.Tensor],
                            present: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
        """``{view: (M, F) float64}`` z-scores the linear read-outs see (a missing view at zero)."""
        return {name: self._standardised(name, features, present).double().cpu().numpy() for name in self.names}

    @torch.no_grad()
    def set_linear(self, weights: Mapping[str, np.ndarray], bias: float) -> None:
        """Set the linear read-outs (``weights[view]``: (F,) on z-scores, zero for a view not given; ``bias``
        on the graph's) and the query to zero, so every gate is 1/V and the correction is exactly
        ``bias + Σ_v weights[v] · z_v``."""
        self.query.zero_()
        for name in self.names:
            weight = weights.get(name, np.zeros(self.linear[name].in_features))
            self.linear[name].weight.copy_(torch.as_tensor(np.asarray(weight, dtype=np.float64))[None, :])
            self.linear[name].bias.fill_(bias if name == GRAPH else 0.0)

    def forward(self, graph_prediction: torch.Tensor, features: Mapping[str, torch.Tensor],
                present: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """((B,) prediction, (B, V) gates over the views in :attr:`names`).

        graph_prediction: (B,) the graph-only model's prediction; features: ``{name: (B, F)}`` with the
        graph's under ``"graph"``; present: ``{name: (B,) bool}`` for the other views (the graph is
        always present). A view absent from ``features`` is missing for every structure.
        """
        terms, gates = self.contributions(features, present)
        return graph_prediction + terms.sum(1).to(graph_prediction.dtype), gates

    def contributions(self, features: Mapping[str, torch.Tensor],
                      present: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """((B, V + 2) the correction's terms, in the target's unit, (B, V) gates); the terms sum to the
        correction the head adds to the graph model's prediction.

        Columns in :attr:`terms` order: one per view, V · g_v · w_v · z_v (what the view's deviation from its
        training mean moved the prediction; a missing view's learned stand-in value V · g_v · m_v), then
        ``constant``, V · Σ_v g_v · b_v over the views present, then ``interaction``, the non-linear
        read-out of the fused token. With equal gates the view terms are the exact attribution of the
        linear read-out to each view against the training mean (a linear model's Shapley values).
        """
        batch = features[GRAPH].shape[0]
        zero = torch.zeros(batch, dtype=self.query.dtype, device=self.query.device)
        tokens, values, biases = [], [], []
        for name in self.names:
            missing_token = self.missing[name].expand(batch, -1)
            missing_value = self.missing_value[name].expand(batch)
            if name not in features:
                tokens.append(missing_token)
                values.append(missing_value)
                biases.append(zero)
                continue
            scaled = self._standardised(name, features, present).to(self.query.dtype)
            token = self.project[name](scaled)
            value = scaled @ self.linear[name].weight[0]
            bias = self.linear[name].bias.expand(batch)
            if name != GRAPH:
                keep = present[name].to(token.device).bool()
                if self.training and self.modality_dropout > 0:
                    keep = keep & (torch.rand(batch, device=token.device) >= self.modality_dropout)
                token = torch.where(keep[:, None], token, missing_token)
                value = torch.where(keep, value, missing_value)
                bias = torch.where(keep, bias, zero)
            tokens.append(token)
            values.append(value)
            biases.append(bias)
        stacked = torch.stack(tokens, dim=1)  # (B, V, width)
        gates = torch.softmax(torch.tanh(self.key(stacked)) @ self.query, dim=1)  # (B, V)
        fused = (gates[:, :, None] * stacked).sum(1)
        scale = len(self.names) * gates
        per_view = scale * torch.stack(values, dim=1)
        constant = (scale * torch.stack(biases, dim=1)).sum(1, keepdim=True)
        return torch.cat([per_view, constant, self.correction(fused)], dim=1), gates

    @property
    def terms(self) -> list[str]:
        """Names of the columns of :meth:`contributions`: the views, ``constant``, ``interaction``."""
        return [*self.names, CONSTANT, INTERACTION]

    def _standardised(self, name: str, features: Mapping[str, torch.Tensor],
                      present: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """(B, F) z-scores of one view, clipped to ±CLIP; rows where the view is missing are zero (the
        training mean)."""
        scaled = ((features[name] - getattr(self, f"mean_{name}")) / getattr(self, f"scale_{name}")).clamp(-CLIP, CLIP)
        if name == GRAPH or name not in present:
            return scaled
        return torch.where(present[name].to(scaled.device).bool()[:, None], scaled, torch.zeros_like(scaled))
