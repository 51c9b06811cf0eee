"""Property heads: per-structure targets read from a backbone's node features."""

from __future__ import annotations

import torch

from ase_moma.backbone import NodeFeatures, mean_pool
from ase_moma.probe import RidgeProbe


class PropertyHead(torch.nn.Module):
    """Mean pooling of invariant node features, then a linear probe plus an MLP, in target units.

    width: F, the invariant feature width. hidden: MLP width. The head predicts
    the target normalised by the training mean and std (kept as buffers, so
    ``forward`` returns the target in its own unit, shape (B,)) as
    ``probe(x) + mlp(x)`` of the pooled features x: :meth:`start_from_probe`
    sets the probe to a fitted ridge regression and zeroes the MLP's output,
    so training starts exactly at the linear probe (LP-FT).
    """

    def __init__(self, width: int, hidden: int = 128, mean: float = 0.0, std: float = 1.0) -> None:
        super().__init__()
        if not std > 0:
            raise ValueError(f"target std must be positive, got {std}")
        self.probe = torch.nn.Linear(width, 1)
        self.mlp = torch.nn.Sequential(
            torch.nn.Linear(width, hidden), torch.nn.SiLU(),
            torch.nn.Linear(hidden, hidden), torch.nn.SiLU(),
            torch.nn.Linear(hidden, 1),
        )
        self.register_buffer("mean", torch.tensor(float(mean)))
        self.register_buffer("std", torch.tensor(float(std)))

    def normalised(self, features: NodeFeatures, n_graphs: int) -> torch.Tensor:
        """(B,) prediction of (target − mean) / std."""
        pooled = mean_pool(features.invariant, features.batch, n_graphs)
        return (self.probe(pooled) + self.mlp(pooled)).squeeze(-1)

    def forward(self, features: NodeFeatures, n_graphs: int) -> torch.Tensor:
        return self.normalised(features, n_graphs) * self.std + self.mean

    @torch.no_grad()
    def start_from_probe(self, probe: RidgeProbe) -> None:
        """Predict exactly ``probe`` (a ridge fit of the target on pooled features, in target units)."""
        std = float(self.std)
        self.probe.weight.copy_(torch.as_tensor(probe.weight / std)[None].to(self.probe.weight))
        self.probe.bias.fill_((probe.bias - float(self.mean)) / std)
        self.mlp[-1].weight.zero_()
        self.mlp[-1].bias.zero_()

    def config(self) -> dict[str, int]:
        """Constructor arguments (besides mean and std) for rebuilding the head."""
        return {"width": self.probe.in_features, "hidden": self.mlp[0].out_features}


class EnergyReference(torch.nn.Module):
    """Per-element reference energies added to a backbone's total energy (eV).

    Fine-tuning a potential on energies from another DFT set-up shifts each
    element's reference energy; ``shift[Z]`` (eV per atom of element Z) holds
    that shift, fitted by least squares before training (:meth:`fit`).
    """

    def __init__(self, n_elements: int = 119) -> None:
        super().__init__()
        self.register_buffer("shift", torch.zeros(n_elements, dtype=torch.float64))

    def forward(self, numbers: torch.Tensor, batch: torch.Tensor, n_graphs: int) -> torch.Tensor:
        """(B,) Σ_i shift[Z_i] over each structure's atoms; numbers, batch: (N,)."""
        per_atom = self.shift[numbers]
        return torch.zeros(n_graphs, dtype=per_atom.dtype, device=per_atom.device).index_add_(0, batch, per_atom)

    @torch.no_grad()
    def fit(self, compositions: list[dict[int, int]], residuals: torch.Tensor) -> None:
        """Least-squares shifts from total-energy residuals (target − backbone, eV) of structures."""
        elements = sorted({z for composition in compositions for z in composition})
        counts = torch.tensor([[c.get(z, 0) for z in elements] for c in compositions], dtype=torch.float64)
        solution = torch.linalg.lstsq(counts, residuals.double().cpu()[:, None], driver="gelsd").solution
        self.shift.zero_()
        self.shift[elements] = solution[:, 0].to(self.shift.device)

    def config(self) -> dict[str, int]:
        return {"n_elements": self.shift.shape[0]}
