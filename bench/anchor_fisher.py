"""Two ablations against forgetting, on unlabelled crystals of the elements the user's data lacks: sparse
fine-tuning's start ranks path-weight entries by their gain on the user's data per unit of harm to that
chemistry, or (any method) training replays those crystals against the untuned model.

The library starts ΔW on the entries with the largest |∂L/∂W| (``IncrementSet.start_along``), and the
budget keeps what it starts on. Here the rank becomes |∂L/∂W| / sqrt(1 + F/F̄), F the diagonal of the
Gauss–Newton (Fisher) matrix of the pretrained model's forces on an anchor set and F̄ its mean over all
path-weight entries: to second order, moving an entry by d gains g·d on the user's loss and changes the
anchor forces by F·d², so g/√F is gain per harm; the 1 keeps an entry the anchors are blind to from
outranking the rest on gain alone (at F = F̄ the rank falls by √2, not without bound).

The anchors need no labels (F is the model's own sensitivity) and no file: one ASE ``bulk`` crystal per
element with a reference state, 8 or more atoms, rattled by 0.05 Å (forces of a perfect lattice vanish
for every weight by symmetry), leaving out every element of the training set — whose chemistry the
user wants to change. F is estimated with Rademacher probes: E[(∂(v·F)/∂W)²] = Σ_k (∂F_k/∂W)².

:class:`ReplayFinetuner` instead holds the anchors' forces during training, for any method: each step
adds the Huber loss of as many anchors as the batch has frames against the untuned model's own forces,
weighted as the user's force term is (``--forces-weight``), cycling through the anchors in a fixed
order. The anchors' forces count as much as the user's; no λ is chosen.
"""

from __future__ import annotations

import numpy as np
import torch
from ase import Atoms
from ase.build import bulk
from ase.data import chemical_symbols, reference_states

from ase_moma.finetune import Finetuner
from ase_moma.labelled_set import LabelledSet

BUILDABLE = ("fcc", "bcc", "hcp", "diamond", "sc")  # reference states ase.build.bulk makes a primitive cell of


def anchor_structures(covered: frozenset[int], excluded: set[int], rattle: float = 0.05) -> list[Atoms]:
    """One rattled bulk crystal (≥ 8 atoms) per element in ``covered`` and not in ``excluded`` whose
    reference state is a BUILDABLE lattice."""
    anchors = []
    for number in sorted(covered - excluded):
        state = reference_states[number] if number < len(reference_states) else None
        if state is None or state.get("symmetry") not in BUILDABLE:
            continue
        try:
            atoms = bulk(chemical_symbols[number])
        except ValueError:  # a reference state with an atomic basis ASE does not tabulate
            continue
        repeats = int(np.ceil((8 / len(atoms)) ** (1 / 3)))
        atoms = atoms.repeat((repeats, repeats, repeats))
        atoms.rattle(rattle, seed=number)
        anchors.append(atoms)
    return anchors


def force_fisher(backbone, anchors: list[Atoms], probes: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    """``{path weight name: diag Fisher}`` (shape of W): the mean over anchors and Rademacher probes v of
    (∂(v·F)/∂W)², F the (n, 3) forces in eV/Å of the untuned model."""
    model = backbone.model
    parameters = dict(model.named_parameters())
    names = [w.name for w in backbone.path_weights()]
    model.requires_grad_(False)
    for name in names:
        parameters[name].requires_grad_(True)
    model.train(True)  # keep the force graph for the derivative with respect to the weights
    generator = torch.Generator().manual_seed(seed)
    fisher = {name: torch.zeros_like(parameters[name]) for name in names}
    for atoms in anchors:
        graph = backbone.graph(atoms)
        for _ in range(probes):
            forces = backbone.forward(backbone.collate([graph]), forces=True, stress=False).forces
            signs = torch.randint(0, 2, forces.shape, generator=generator).to(forces) * 2 - 1
            gradients = torch.autograd.grad((signs * forces).sum(), [parameters[n] for n in names],
                                            allow_unused=True)
            for name, gradient in zip(names, gradients):
                if gradient is not None:
                    fisher[name] += gradient.detach() ** 2
    model.train(False)
    for name in names:
        parameters[name].requires_grad_(False)
    count = len(anchors) * probes
    return {name: value / count for name, value in fisher.items()}


def anchors_for(backbone, train: LabelledSet) -> list[Atoms]:
    """The anchors of a run: one crystal per element ``backbone`` covers and ``train`` lacks."""
    trained = {int(z) for atoms in train.frames for z in atoms.numbers}
    return anchor_structures(backbone.covered_numbers, trained)


def frame_forces(model, graphs: list) -> list[torch.Tensor]:
    """Each graph's (n_atoms, 3) forces in eV/Å, float64, from one collated forward of ``model``."""
    out = model.forward(model.collate(graphs), forces=True, stress=False)
    return list(torch.split(out.forces.double(), out.n_atoms.tolist()))


class AnchoredFinetuner(Finetuner):
    """A :class:`Finetuner` whose sparse start ranks entries by |∂L/∂W| / sqrt(1 + F/F̄) (module docstring)."""

    def _path_gradients(self, graphs: list, train: LabelledSet) -> dict[str, torch.Tensor]:
        gradients = super()._path_gradients(graphs, train)
        anchors = anchors_for(self.backbone, train)
        fisher = force_fisher(self.backbone, anchors)
        mean = torch.cat([f.reshape(-1) for f in fisher.values()]).double().mean()
        print(f"anchor Fisher: {len(anchors)} element crystals, mean {float(mean):.3e}", flush=True)
        return {name: g / torch.sqrt(1 + fisher[name] / mean).to(g.dtype) for name, g in gradients.items()}


class ReplayFinetuner(Finetuner):
    """A :class:`Finetuner` whose loss also replays the anchors against the untuned model (module docstring)."""

    def fit(self, train: LabelledSet, valid: LabelledSet, **options):
        self.anchor_graphs = [self.backbone.graph(atoms) for atoms in anchors_for(self.backbone, train)]
        self.anchor_forces = [f.detach() for f in frame_forces(self.backbone, self.anchor_graphs)]
        self.replayed = 0
        print(f"replay: {len(self.anchor_graphs)} element crystals", flush=True)
        return super().fit(train, valid, **options)

    def _batch_loss(self, graphs, data, counts, rows, scale: float = 1.0) -> torch.Tensor:
        value = super()._batch_loss(graphs, data, counts, rows, scale)
        if getattr(self.method, "increments", True) is None:
            return value  # the start's gradient pass ranks entries by the user's loss alone
        loss = self.config.loss
        picked = [(self.replayed + k) % len(self.anchor_graphs) for k in range(len(rows))]
        self.replayed += len(rows)
        predicted = frame_forces(self.model, [self.anchor_graphs[i] for i in picked])
        replay = scale * loss.forces / len(rows) * sum(  # each anchor's mean Huber counts alike
            torch.nn.functional.huber_loss(part, self.anchor_forces[i], delta=loss.huber_delta)
            for part, i in zip(predicted, picked))
        if value.requires_grad:
            return value + replay
        replay.backward()
        return value + replay.detach()
