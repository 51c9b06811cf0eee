"""A property model that reads a structure's graph and its other views: graph model + fusion heads.

The graph model (a :class:`~ase_moma.property_model.PropertyModel`: plain backbone, composition or hub
module) predicts as it always has; each member of the fusion (a
:class:`~ase_moma.modalities.fusion_head.FusionHead` and the forests whose columns it reads) adds its
correction from the graph's pooled features and the other views' encodings, and the members' predictions
and their terms averaged. :meth:`explain` also says, per structure, what each view added to the prediction
(in the target's unit), the gates, and which views were missing and why.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from ase import Atoms

from ase_moma.modalities.base import Modality
from ase_moma.modalities.forest import Forest
from ase_moma.modalities.fusion_head import GRAPH, FusionHead
from ase_moma.modalities.registry import EncoderMismatch, build_modality
from ase_moma.module_files import HubIntegrityError, load_state, load_tensors
from ase_moma.module_format import FUSION, MODULE_FORMAT
from ase_moma.property_model import PropertyModel


EXPERT = "expert."
"""Prefix of the experts' arrays within a member's part of ``fusion.safetensors`` (``expert.<view>.<field>``)."""
MEMBER = "member{}."
"""Prefix of member k's head weights and experts in ``fusion.safetensors`` (``member0.query``,
``member0.expert.composition.roots``; a file written before members existed is read as one member:
:data:`ase_moma.module_format.MODULE_FORMAT`)."""
JOINT = "joint"
"""The view of the joint expert: a forest over every non-graph view at once, whose disagreement with the graph
model is this view's one column. Forests of one view each miss what the views say together (a density that
matters only for some compositions); a forest over all of them is the strongest simple baseline on most
shared tasks, so the head gets it as one more view to weigh."""
BOOSTED = "composition_boosted"
"""The view of gradient boosting on the composition view alone (one column, its disagreement with the graph
model). Magpie statistics with gradient boosting is matbench's standard composition baseline, the best one
on some shared tasks (dielectric constants with few structures) and the strongest part of stacking on
experimental formation energies, where the composition forest is weaker; the head weighs it beside the
forest rather than one replacing the other."""
DERIVED = {JOINT: None, BOOSTED: ("composition",)}
"""The expert views, each a single column made by one expert: ``{view: the encoded views its expert reads
side by side}``, None for every non-graph view."""


def derived_reads(name: str, names: Sequence[str]) -> list[str]:
    """The encoded views that expert view ``name`` (a DERIVED key) reads, of the non-graph views ``names``;
    empty where it does not apply (the joint forest needs two views or more, boosting the composition view)."""
    wanted = DERIVED[name]
    if wanted is None:
        return list(names) if len(names) > 1 else []
    return list(wanted) if set(wanted) <= set(names) else []


@dataclass
class Views:
    """Every view of M structures: the graph model's (M,) prediction, ``features {name: (M, F)}``
    (float64, the graph's under ``"graph"``), ``present {name: (M,) bool}`` for the other views, and
    ``missing``: per structure, ``{view: reason}`` for the views it lacks."""

    graph_prediction: torch.Tensor
    features: dict[str, torch.Tensor]
    present: dict[str, torch.Tensor]
    missing: list[dict[str, str]]

    def rows(self, index: Sequence[int] | torch.Tensor) -> "Views":
        """The views of the structures at ``index``."""
        index = torch.as_tensor(index, dtype=torch.long)
        return Views(self.graph_prediction[index], {k: v[index] for k, v in self.features.items()},
                     {k: v[index] for k, v in self.present.items()}, [self.missing[int(i)] for i in index])


def with_expert(views: Views, name: str, prediction: np.ndarray) -> Views:
    """``views`` with one more column on view ``name``: its expert's ``prediction`` (M,) minus the graph
    model's (the expert's disagreement with the graph; zero where the view is missing)."""
    disagreement = _disagreement(views, prediction, views.present[name].numpy())
    features = dict(views.features)
    features[name] = torch.cat([views.features[name], disagreement], dim=1)
    return Views(views.graph_prediction, features, views.present, views.missing)


def _disagreement(views: Views, prediction: np.ndarray, present: np.ndarray) -> torch.Tensor:
    """(M, 1) an expert's ``prediction`` minus the graph model's, zero where ``present`` is False."""
    disagreement = np.asarray(prediction, dtype=np.float64) - views.graph_prediction.double().numpy()
    disagreement[~present] = 0.0
    return torch.as_tensor(disagreement)[:, None]


def joint_features(views: Views, names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """((M, ΣF) the views ``names`` side by side, as encoded (before any expert column), (M,) bool: the
    structures that have every one of them)."""
    features = np.concatenate([views.features[name].numpy() for name in names], axis=1)
    present = np.logical_and.reduce([views.present[name].numpy() for name in names])
    return features, present


def with_derived(views: Views, name: str, prediction: np.ndarray, present: np.ndarray) -> Views:
    """``views`` with the expert view ``name`` (a DERIVED key): its expert's ``prediction`` (M,) minus the graph
    model's, one column, present where the structure has every view the expert reads."""
    return Views(views.graph_prediction, {**views.features, name: _disagreement(views, prediction, present)},
                 {**views.present, name: torch.as_tensor(present)}, views.missing)


def with_experts(views: Views, experts: Mapping[str, Forest], names: Sequence[str]) -> Views:
    """``views`` of the non-graph views ``names`` (as :func:`encode_views` gives them) with each view's expert
    column (:func:`with_expert`) and each expert view there is an expert for (:func:`with_derived`)."""
    derived = {name: joint_features(views, derived_reads(name, names)) for name in experts if name in DERIVED}
    for name, forest in experts.items():
        if name not in DERIVED:
            views = with_expert(views, name, forest.predict(views.features[name].numpy()))
    for name, (features, present) in derived.items():
        views = with_derived(views, name, experts[name].predict(features), present)
    return views


def encode_views(graph_model: PropertyModel, graphs: Sequence[Any], structures: Sequence[Atoms],
                 encoders: Mapping[str, Modality], batch_size: int = 32) -> Views:
    """The views of ``structures`` (their graphs already built by the graph model's backbone)."""
    predicted, embedded = graph_model.predict_and_embed_graphs(graphs, batch_size)
    prediction = torch.as_tensor(predicted)
    features = {GRAPH: embedded.double()}
    present: dict[str, torch.Tensor] = {}
    missing: list[dict[str, str]] = [{} for _ in structures]
    for name, encoder in encoders.items():
        encoded = encoder.encode(structures)
        features[name] = torch.as_tensor(encoded.features, dtype=torch.float64)
        present[name] = torch.as_tensor(encoded.present)
        for row, reason in encoded.missing.items():
            missing[row][name] = reason
    return Views(prediction, features, present, missing)


@dataclass
class FusionMember:
    """One fitted head and the forests (``{view: Forest}``) whose columns it reads: each forest adds its
    disagreement with the graph model as one more column of its view (:func:`with_expert`), and each expert
    view's (DERIVED: the JOINT forest over every view, boosting on composition) a view of its own
    (:func:`with_derived`)."""

    head: FusionHead
    experts: dict[str, Forest]


@dataclass
class Fused:
    """What fusion members give for M structures, averaged over the members: values (M,) in the target's
    unit; graph (M,) the graph model's prediction; gates (M, V) over the head's views; terms (M, T) the
    correction's terms (:meth:`FusionHead.contributions`, columns named by ``names``), so that
    ``values == graph + terms.sum(1)``."""

    values: np.ndarray
    graph: np.ndarray
    gates: np.ndarray
    terms: np.ndarray
    names: list[str]


@torch.no_grad()
def fuse_members(members: Sequence[FusionMember], views: Views, names: Sequence[str]) -> Fused:
    """The mean of ``members`` on ``views`` of the non-graph views ``names`` (as :func:`encode_views` gives
    them, before any expert column)."""
    gates, terms = [], []
    for member in members:
        member_views = with_experts(views, member.experts, names)
        term, gate = member.head.contributions(member_views.features, member_views.present)
        terms.append(term.double().cpu().numpy())
        gates.append(gate.double().cpu().numpy())
    graph = views.graph_prediction.double().cpu().numpy()
    mean_terms = np.mean(terms, axis=0)
    return Fused(graph + mean_terms.sum(1), graph, np.mean(gates, axis=0), mean_terms, members[0].head.terms)


@dataclass
class FusedPrediction:
    """fused: the members' mean (:class:`Fused`: values, the graph model's prediction, gates, the
    correction's terms); missing: per structure, ``{view: reason}`` for the views it lacked (empty when it
    had all)."""

    fused: Fused
    missing: list[dict[str, str]]

    @property
    def values(self) -> np.ndarray:
        """(M,) predictions in the target's unit."""
        return self.fused.values

    def notes(self, row: int) -> dict[str, Any]:
        """What to write into one structure's ``atoms.info``: ``fusion_graph_model`` (the graph model's
        prediction), ``fusion_contribution_<term>`` for every term of the correction (the views,
        ``constant``, ``interaction``; with the graph model's prediction they sum to the value),
        ``fusion_gate_<view>`` for every view and, when views were missing, ``fusion_missing`` (their
        names, comma-separated)."""
        fused = self.fused
        notes: dict[str, Any] = {"fusion_graph_model": float(fused.graph[row])}
        notes.update({f"fusion_contribution_{name}": float(t) for name, t in zip(fused.names, fused.terms[row])})
        views = fused.names[:fused.gates.shape[1]]
        notes.update({f"fusion_gate_{view}": float(g) for view, g in zip(views, fused.gates[row])})
        if self.missing[row]:
            notes["fusion_missing"] = ",".join(sorted(self.missing[row]))
        return notes


class FusedPropertyModel(torch.nn.Module):
    """A graph property model plus fusion members over its other views, averaged; used as any property model.

    members: the fitted heads, each with its forests (:class:`FusionMember`); every head reads the same views.
    """

    def __init__(self, graph: PropertyModel, members: Sequence[FusionMember], encoders: Mapping[str, Modality]) -> None:
        super().__init__()
        if not members:
            raise ValueError("a fused model needs at least one fusion member")
        names = members[0].head.names
        if sorted(encoders) != [name for name in names if name != GRAPH and name not in DERIVED] or \
                any(member.head.names != names for member in members):
            raise ValueError(f"the fusion heads read {[m.head.names[1:] for m in members]}, the encoders given "
                             f"are {sorted(encoders)}")
        self.graph = graph
        self.members = list(members)
        self.heads = torch.nn.ModuleList(member.head for member in self.members)  # moved and switched with the model
        self.encoders = dict(encoders)

    @property
    def backbone(self):
        return self.graph.backbone

    @property
    def target(self) -> str:
        return self.graph.target

    @property
    def unit(self) -> str:
        return self.graph.unit

    @property
    def views(self) -> list[str]:
        """The views the heads weigh, in the order of the gates' columns."""
        return list(self.members[0].head.names)

    def fuse(self, views: Views) -> Fused:
        """The members' mean on views already encoded (:func:`encode_views`)."""
        return fuse_members(self.members, views, sorted(self.encoders))

    def explain(self, structures: Sequence[Atoms], batch_size: int = 32) -> FusedPrediction:
        """Predictions for ``structures`` with what each view contributed, the gates and the missing views."""
        graphs = [self.backbone.graph(atoms) for atoms in structures]
        views = encode_views(self.graph, graphs, structures, self.encoders, batch_size)
        return FusedPrediction(self.fuse(views), views.missing)

    def predict(self, structures: Sequence[Atoms], batch_size: int = 32) -> np.ndarray:
        """(M,) float64 predictions for ``structures``."""
        return self.explain(structures, batch_size).values


def load_fused(folder: Path, meta: dict[str, Any], graph: PropertyModel) -> FusedPropertyModel:
    """The fused model of a verified module folder whose module.json records a kept fusion head.

    Each encoder is built as installed and its identity compared with the one recorded at training:
    EncoderMismatch naming the view and both identities when they differ (a different MiniLM or Magpie
    table would feed the head features it was never trained on).
    """
    record = meta["fusion"]
    encoders = {name: build_modality(name) for name in record["encoders"]}
    for name, encoder in encoders.items():
        installed, recorded = encoder.identity(), record["encoders"][name]
        if installed != recorded:
            changed = sorted(key for key in {*installed, *recorded} if installed.get(key) != recorded.get(key))
            raise EncoderMismatch(
                f"{folder} was trained with a different {name} encoder than the one installed "
                f"({', '.join(f'{key}: trained {str(recorded.get(key))[:24]}, installed {str(installed.get(key))[:24]}' for key in changed)})")
    tensors = MODULE_FORMAT.load(load_tensors(folder / FUSION), FUSION, meta)
    prefixes = [MEMBER.format(k) for k in range(len(record["members"]))]
    unclaimed = [key for key in tensors if not key.startswith(tuple(prefixes))]
    if unclaimed:
        raise HubIntegrityError(f"{folder / FUSION} holds tensors of no fusion member: {unclaimed[:3]}")
    members = []
    for prefix in prefixes:
        mine = {key[len(prefix):]: value for key, value in tensors.items() if key.startswith(prefix)}
        head = FusionHead(**record["head"]).double()
        load_state(head, {k: v for k, v in mine.items() if not k.startswith(EXPERT)}, folder / FUSION)
        try:
            experts = {name: Forest.from_tensors(mine, f"{EXPERT}{name}.") for name in record.get("experts", [])}
        except ValueError as error:
            raise HubIntegrityError(f"{folder / FUSION}: {error}") from None
        members.append(FusionMember(head.to(graph.backbone.device), experts))
    return FusedPropertyModel(graph, members, encoders).eval()


def member_tensors(members: Sequence[FusionMember]) -> dict[str, torch.Tensor]:
    """What ``fusion.safetensors`` holds: every member's head weights and forests under its MEMBER prefix."""
    tensors: dict[str, torch.Tensor] = {}
    for k, member in enumerate(members):
        prefix = MEMBER.format(k)
        tensors.update({prefix + name: value.detach().clone() for name, value in member.head.state_dict().items()})
        for view, forest in member.experts.items():
            tensors.update(forest.tensors(f"{prefix}{EXPERT}{view}."))
    return tensors
