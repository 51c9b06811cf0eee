"""A third-party ase-moma backbone: a Morse pair potential for Cu, written in torch.

It stands for any outside distribution that registers a backbone in the
``ase_moma.backbones`` entry-point group; the tests install it with pip.
"""

from __future__ import annotations

import numpy as np
import torch
from ase.neighborlist import neighbor_list

from ase_moma.backbone import Backbone, BackboneOutput, NodeFeatures, PathWeight
from ase_moma.capabilities import Capabilities


class MorsePair(torch.nn.Module):
    """E = sum over pairs of D (exp(-2a(r-r0)) - 2 exp(-a(r-r0))), r < cutoff."""

    def __init__(self) -> None:
        super().__init__()
        self.depth = torch.nn.Parameter(torch.tensor(0.3429))
        self.alpha = torch.nn.Parameter(torch.tensor(1.3588))
        self.r0 = torch.nn.Parameter(torch.tensor(2.866))

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        x = torch.exp(-self.alpha * (r - self.r0))
        return self.depth * (x * x - 2 * x)


class MorseBackbone(Backbone):
    name = "morse"
    requires = ("torch",)
    has_default = True
    capabilities = Capabilities(path_weights=True)

    @classmethod
    def load(cls, source=None, *, device, dtype):
        model = MorsePair().to(device=device, dtype=dtype)
        return cls(model, device=device, dtype=dtype, source="builtin", cutoff=6.0, covered_numbers=[29])

    def build_graph(self, atoms):
        i, j, shift = neighbor_list("ijS", atoms, self.cutoff)
        return {"positions": atoms.positions, "cell": atoms.cell.array, "i": i, "j": j, "shift": shift,
                "numbers": atoms.numbers}

    def atomic_numbers(self, graph):
        return torch.as_tensor(graph["numbers"], dtype=torch.long)

    def collate(self, graphs):
        offsets = np.cumsum([0] + [len(g["positions"]) for g in graphs])

        def tensor(x, dt=self.dtype):
            return torch.as_tensor(np.asarray(x), dtype=dt, device=self.device)

        return {
            "positions": [tensor(g["positions"]) for g in graphs],
            "cells": [tensor(g["cell"]) for g in graphs],
            "edges": [(tensor(g["i"] + o, torch.long), tensor(g["j"] + o, torch.long), tensor(g["shift"]))
                      for g, o in zip(graphs, offsets)],
        }

    def _energies(self, batch, strains):
        positions = torch.cat([p @ (torch.eye(3, dtype=p.dtype) + s) for p, s in zip(batch["positions"], strains)])
        energies = []
        for (i, j, shift), cell, strain in zip(batch["edges"], batch["cells"], strains):
            vectors = positions[j] - positions[i] + shift @ (cell @ (torch.eye(3, dtype=cell.dtype) + strain))
            energies.append(0.5 * self.model(vectors.norm(dim=1)).sum())
        return positions, torch.stack(energies)

    def forward(self, batch, *, forces=True, stress=True):
        strains = [torch.zeros(3, 3, dtype=self.dtype, requires_grad=True) for _ in batch["cells"]]
        for p in batch["positions"]:
            p.requires_grad_(True)
        positions, energy = self._energies(batch, strains)
        grads = torch.autograd.grad(energy.sum(), batch["positions"] + strains)
        n = len(batch["positions"])
        volumes = torch.stack([torch.linalg.det(c).abs() for c in batch["cells"]])
        return BackboneOutput(
            energy=energy.detach(),
            n_atoms=torch.tensor([len(p) for p in batch["positions"]]),
            forces=-torch.cat(grads[:n]) if forces else None,
            stress=torch.stack(grads[n:]) / volumes[:, None, None] if stress else None,
        )

    def node_features(self, batch):
        counts = [len(p) for p in batch["positions"]]
        degree = torch.cat([torch.bincount(i - i.min(), minlength=c).to(self.dtype)
                            for (i, _, _), c in zip(batch["edges"], counts)])
        index = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
        return NodeFeatures(invariant=degree[:, None], batch=index)

    def path_weights(self):
        return [PathWeight(name, "pair", "radial_mlp") for name, _ in self.model.named_parameters()]
