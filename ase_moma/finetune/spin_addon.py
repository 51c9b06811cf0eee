"""A spin head riding on any fine-tuning method: built beside the backbone, started from the training
data, and trained densely at its own learning rate beside whatever the method moves.

Its start, in order: the moments' magnitudes at a ridge probe of the training |m_i|
(:meth:`SpinAddOn.start_magnitudes`), then, after the reference energies are refitted, the exchange J
at its least-squares fit to what the backbone leaves of the training energies
(:meth:`SpinAddOn.start_exchange`, :mod:`ase_moma.spin.exchange_start`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ase_moma.backbone import Backbone
from ase_moma.spin.exchange_start import ExchangeFit, fit_exchange, ordered_geometries
from ase_moma.finetune.methods.base import Trainable
from ase_moma.finetune.potential_data import PotentialSet
from ase_moma.spin.model import SpinBackbone


class SpinAddOn:
    """The spin head of a fine-tuning run: ``model`` is the backbone with the head attached.

    kind: ``"vector"`` or ``"collinear"``; exchange: whether the head carries its exchange energy
    (False: J ≡ 0, untrained); environment, local_order: the head's settings (:class:`SpinHead`);
    lr, weight_decay: its optimiser group's. The head's random initialisation is drawn from ``seed``.
    """

    def __init__(self, backbone: Backbone, kind: str, *, exchange: bool, environment: bool, local_order: bool,
                 lr: float, weight_decay: float, seed: int) -> None:
        torch.manual_seed(seed)
        self.model = SpinBackbone.for_backbone(backbone, kind, environment=environment, local_order=local_order)
        self.kind, self.exchange, self.lr, self.weight_decay, self.seed = kind, exchange, lr, weight_decay, seed
        self.exchange_start: ExchangeFit | None = None
        self._ordered: list | None = None

    def check(self, *sets: PotentialSet) -> None:
        """Refuse sets read without their moments."""
        if any(data.magmoms is None for data in sets):
            raise ValueError(f"the spin head trains on moments: read the sets with magmoms={self.kind!r}")

    def graphs(self, data: PotentialSet) -> list[Any]:
        """The model's graphs of ``data``'s frames, each frame's spin configuration its DFT moments'
        directions (or signs), as a user sets it with set_initial_magnetic_moments."""
        if data.magmoms is None:
            raise ValueError(f"the spin head needs the moments of {data.source}: read it with magmoms=...")
        graphs = []
        for atoms, moments in zip(data.frames, data.magmoms):
            configured = atoms.copy()
            configured.set_initial_magnetic_moments(None)  # (n,) and (n, 3) moments do not replace each other
            configured.set_initial_magnetic_moments(moments)
            graphs.append(self.model.graph(configured))
        return graphs

    @torch.no_grad()
    def start_magnitudes(self, graphs: list[Any], train: PotentialSet, batch_size: int = 16) -> None:
        """The magnitudes start at the ridge probe of the training |m_i| on the frozen backbone's per-atom
        features, then of what it leaves on the training spins' order features (LP-FT, as for property
        heads). J's view of the environment is pointed along those features' main directions of
        variation where the training set gives some geometry in different orders, and stays shut (J of
        distance and species) where it gives none: how J changes with the environment is learnt only
        from differences between orders, and without any it only fitted the backbone's errors (fe_spin,
        bench/RESULTS.md). The projection is not trained: at the head's learning rate a few steps moved
        it far enough to make J diverge."""
        self._ordered = ordered_geometries(train.frames, [graph.spins.cpu().numpy() for graph in graphs])
        parts = [self.model.features_and_order(self.model.collate(graphs[i:i + batch_size]))
                 for i in range(0, len(graphs), batch_size)]
        features, order = (torch.cat(columns) for columns in zip(*parts))
        magnitudes = torch.as_tensor(np.concatenate([_magnitudes(m) for m in train.magmoms]))
        structures = torch.as_tensor(np.repeat(np.arange(len(train)), train.n_atoms()))
        self.model.head.start_from_probe(features, magnitudes, structures, order)
        if self._ordered:
            self.model.head.start_environment(features)

    def start_exchange(self, graphs: list[Any], train: PotentialSet, loss: Any) -> dict[int, float]:
        """Fit J's start (after :meth:`start_magnitudes` and the reference refit); the per-element
        reference-energy shifts (eV per atom) the fit asks for beside it (empty without exchange)."""
        if not self.exchange:
            return {}
        self.exchange_start = fit_exchange(self.model, graphs, train, loss, geometries=self._ordered, seed=self.seed)
        return dict(self.exchange_start.reference_shifts or {})

    def trainable(self) -> Trainable:
        """The head's parameters, densely, at its own rate: J's network left out without exchange, the
        environment projection (set at the start) never trained."""
        head = dict(self.model.head.named_parameters())
        if not self.exchange:  # J ≡ 0: its network stays at its zero output, untrained
            for name in [n for n in head if n.startswith(("exchange.", "species."))]:
                head.pop(name).requires_grad_(False)
        tensors = {f"spin_head.{n}": p for n, p in head.items()}
        for name in [n for n in head if n.startswith("environment.")]:
            head.pop(name).requires_grad_(False)
        return Trainable([{"params": list(head.values()), "lr": self.lr, "weight_decay": self.weight_decay}], tensors)

    def state(self) -> dict[str, torch.Tensor]:
        """A copy of the head's state (to put back with :meth:`restore`)."""
        return {k: v.detach().clone() for k, v in self.model.head.state_dict().items()}

    def restore(self, state: dict[str, torch.Tensor]) -> None:
        self.model.head.load_state_dict(state)


def _magnitudes(moments: np.ndarray) -> np.ndarray:
    """|m| per atom of (n, 3) vectors or (n,) signed scalars."""
    return np.linalg.norm(moments, axis=-1) if moments.ndim == 2 else np.abs(moments)
