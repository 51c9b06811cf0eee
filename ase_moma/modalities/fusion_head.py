"""A fusion head that starts where the graph model is and can only add.

Each view (the graph's pooled features and every other modality's) is standardised, projected to a
common width and becomes one token; a view a structure lacks is replaced by that view's learned
missing token. A learned query attends over the tokens of each structure, so the weights it gives the
views (the gates, reported per structure) say which views it read. The output is

    y = y_graph + correction(fused tokens),

with the correction's last layer at zero: before training the head is exactly the graph-only model it
was built on, so whatever guarantee that model has (never below its probe on validation) holds at the
start. During training, each non-graph view of a structure is dropped with probability
``modality_dropout`` (its missing token stands in), so the head keeps working when a view is missing at
prediction time.
"""

from __future__ import annotations

from typing import Mapping

import torch

GRAPH = "graph"


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
        for name in self.names:
            self.register_buffer(f"mean_{name}", torch.zeros(sizes[name]))
            self.register_buffer(f"scale_{name}", torch.ones(sizes[name]))
        self.key = torch.nn.Linear(width, width)
        self.query = torch.nn.Parameter(torch.zeros(width))
        self.correction = torch.nn.Sequential(torch.nn.Linear(width, width), torch.nn.SiLU(), torch.nn.Linear(width, 1))
        with torch.no_grad():
            self.correction[-1].weight.zero_()
            self.correction[-1].bias.zero_()

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
            getattr(self, f"scale_{name}").copy_(rows.std(0, unbiased=False).clamp(min=1e-8))

    def forward(self, graph_prediction: torch.Tensor, features: Mapping[str, torch.Tensor],
                present: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """((B,) prediction, (B, V) gates over the views in :attr:`names`).

        graph_prediction: (B,) the graph-only model's prediction; features: ``{name: (B, F)}`` with the
        graph's under ``"graph"``; present: ``{name: (B,) bool}`` for the other views (the graph is
        always present). A view absent from ``features`` is missing for every structure.
        """
        batch = graph_prediction.shape[0]
        tokens = []
        for name in self.names:
            missing = self.missing[name].expand(batch, -1)
            if name not in features:
                tokens.append(missing)
                continue
            scaled = (features[name] - getattr(self, f"mean_{name}")) / getattr(self, f"scale_{name}")
            token = self.project[name](scaled.to(self.query.dtype))
            if name != GRAPH:
                keep = present[name].to(token.device).bool()
                if self.training and self.modality_dropout > 0:
                    keep = keep & (torch.rand(batch, device=token.device) >= self.modality_dropout)
                token = torch.where(keep[:, None], token, missing)
            tokens.append(token)
        stacked = torch.stack(tokens, dim=1)  # (B, V, width)
        gates = torch.softmax(torch.tanh(self.key(stacked)) @ self.query, dim=1)  # (B, V)
        fused = (gates[:, :, None] * stacked).sum(1)
        return graph_prediction + self.correction(fused).squeeze(-1).to(graph_prediction.dtype), gates
