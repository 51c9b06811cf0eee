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
from ase_moma.finetune.methods.base import Trainable
from ase_moma.labelled_set import LabelledSet
from ase_moma.spin.exchange_start import ExchangeFit, fit_exchange, ordered_geometries
from ase_moma.spin.head import COLLAPSED
from ase_moma.spin.model import SpinBackbone


FIXED = ("environment.", "species.", "exchange.", "landau.", "probe.", "order.")
"""The head's layers that keep their start (:meth:`SpinAddOn.trainable`)."""


class SpinAddOn:
    """The spin head of a fine-tuning run: ``model`` is the backbone with the head attached.

    kind: ``"vector"`` or ``"collinear"``; exchange: whether the head carries its exchange energy
    (False: no energy, J and the Landau terms ≡ 0, untrained); environment, local_order, longitudinal: the
    head's settings (:class:`SpinHead`);
    lr, weight_decay: its optimiser group's. The head's random initialisation is drawn from ``seed``.
    """

    def __init__(self, backbone: Backbone, kind: str, *, exchange: bool, environment: bool, local_order: bool,
                 longitudinal: bool, lr: float, weight_decay: float, seed: int) -> None:
        torch.manual_seed(seed)
        self.model = SpinBackbone.for_backbone(backbone, kind, environment=environment, local_order=local_order,
                                               longitudinal=longitudinal)
        self.kind, self.exchange, self.lr, self.weight_decay, self.seed = kind, exchange, lr, weight_decay, seed
        self.exchange_start: ExchangeFit | None = None
        self._ordered: list | None = None

    def check(self, *sets: LabelledSet) -> None:
        """Refuse sets read without their moments."""
        if any(data.magmoms is None for data in sets):
            raise ValueError(f"the spin head trains on moments: read the sets with magmoms={self.kind!r}")

    def graphs(self, data: LabelledSet) -> list[Any]:
        """The model's graphs of ``data``'s frames, each frame's spin configuration as a user sets it with
        set_initial_magnetic_moments: :func:`configuration`."""
        if data.magmoms is None:
            raise ValueError(f"the spin head needs the moments of {data.source}: read it with magmoms=...")
        graphs = []
        for atoms, moments in zip(data.frames, data.magmoms):
            configured = atoms.copy()
            configured.set_initial_magnetic_moments(None)  # (n,) and (n, 3) moments do not replace each other
            configured.set_initial_magnetic_moments(configuration(atoms, moments))
            graphs.append(self.model.graph(configured))
        return graphs

    @torch.no_grad()
    def start_magnitudes(self, graphs: list[Any], train: LabelledSet, batch_size: int = 16) -> None:
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
        if self._ordered:  # first: a longitudinal head's order layer reads the environment too
            self.model.head.start_environment(features)
        # an atom given no moment (a non-magnetic state) carries none whatever its magnitude: it says nothing of it
        given = torch.cat([graph.spins.norm(dim=-1) > 0 for graph in graphs]).cpu()
        self.model.head.start_from_probe(features[given], magnitudes[given], structures[given], order[given])

    def start_exchange(self, graphs: list[Any], train: LabelledSet, loss: Any) -> dict[int, float]:
        """Fit J's start (after :meth:`start_magnitudes` and the reference refit); the per-element
        reference-energy shifts (eV per atom) the fit asks for beside it (empty without exchange)."""
        if not self.exchange:
            return {}
        self.exchange_start = fit_exchange(self.model, graphs, train, loss, geometries=self._ordered, seed=self.seed)
        return dict(self.exchange_start.reference_shifts or {})

    def trainable(self) -> Trainable:
        """The head's parameters, densely, at its own rate, less those whose start is a closed-form fit or a
        fixed random feature: the whole energy (J's network, the Landau layer, the species embedding and the
        environment projection they read: a least-squares fit with a cross-validated ridge) and the
        magnitudes' probe and order layer (their ridge start); the magnitudes' MLP trains on the moments.
        Trained on, the energy read-outs moved the held-out order gaps away from their start's in every run
        measured, by up to five times (bench/RESULTS.md, "Moments that shrink and vanish"). Without exchange
        J's network and the Landau layer stay at their zero output."""
        head = dict(self.model.head.named_parameters())
        if not self.exchange:  # no energy: J's network and the Landau layer stay at their zero output, untrained
            for name in [n for n in head if n.startswith(("exchange.", "species.", "landau."))]:
                head.pop(name).requires_grad_(False)
        tensors = {f"spin_head.{n}": p for n, p in head.items()}
        for name in [n for n in head if n.startswith(FIXED)]:
            head.pop(name).requires_grad_(False)
        return Trainable([{"params": list(head.values()), "lr": self.lr, "weight_decay": self.weight_decay}], tensors)

    def state(self) -> dict[str, torch.Tensor]:
        """A copy of the head's state (to put back with :meth:`restore`)."""
        return {k: v.detach().clone() for k, v in self.model.head.state_dict().items()}

    def restore(self, state: dict[str, torch.Tensor]) -> None:
        self.model.head.load_state_dict(state)


def configuration(atoms: Any, moments: np.ndarray) -> np.ndarray:
    """The spin configuration a training frame was computed in, in the form of its DFT ``moments`` ((n,) signed
    or (n, 3)): the moments' own directions, except where a moment collapsed (|m| < COLLAPSED): there its sign
    or direction is noise, and the configuration is the initial moment the DFT run started from (zero where
    the frame carries none: a non-magnetic atom), so the head learns that this configuration ends at zero."""
    sizes = _magnitudes(moments)
    if not (sizes < COLLAPSED).any():
        return moments
    initial = (np.asarray(atoms.get_initial_magnetic_moments(), dtype=np.float64) if atoms.has("initial_magmoms")
               else np.zeros(len(atoms)))
    if initial.ndim != moments.ndim:  # a collinear start of vector moments lies along z; the reverse: along z too
        initial = (np.stack([np.zeros_like(initial), np.zeros_like(initial), initial], axis=1) if initial.ndim == 1
                   else initial[:, 2])
    collapsed = sizes < COLLAPSED
    return np.where(collapsed.reshape((-1,) + (1,) * (moments.ndim - 1)), initial, moments)


def _magnitudes(moments: np.ndarray) -> np.ndarray:
    """|m| per atom of (n, 3) vectors or (n,) signed scalars."""
    return np.linalg.norm(moments, axis=-1) if moments.ndim == 2 else np.abs(moments)
