"""Training the fusion heads on a trained graph model's task, and what a module folder records of them.

The graph model is frozen here: every view of every structure is encoded once, so the heads train on
fixed features in seconds.

The graph model was fitted on the training structures, so its predictions there are in-sample: on a
small task it interpolates them (residuals near zero) and a correction fitted to those residuals learns
nothing. A head therefore sees, for each training structure, an out-of-fold graph prediction — a ridge
read-out of the model's frozen pooled features fitted on the other folds (OOF_FOLDS) — as stacking
does; on validation and at prediction time it sees the graph model's own prediction.

A fusion is MEMBERS members averaged. Each member is fitted with its own seed (its out-of-fold folds,
its forests' bootstraps, its head's initial weights and batch order): its head starts as the graph model
(zero correction); its linear read-outs then start at a blend of the graph model and the forests plus a
ridge fit of what the blend leaves (:func:`linear_start`); then the whole head trains through the training
engine (AdamW, normalised Huber loss, modality dropout, early stopping on validation MAE), keeping the start
when training never improved on it. The members' mean prediction is kept when its validation MAE beats the
graph model's, so fusion never ends worse on validation than the graph model it was given.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ase_moma.labelled_set import LabelledSet
from ase_moma.modalities.forest import Forest
from ase_moma.modalities.fused_model import (BOOSTED, JOINT, FusedPropertyModel, FusionMember, Views, derived_reads,
                                             encode_views, fuse_members, joint_features, member_tensors, with_derived,
                                             with_expert)
from ase_moma.modalities.fusion_head import GRAPH, FusionHead
from ase_moma.modalities.registry import build_modality
from ase_moma.module_format import FUSION
from ase_moma.probe import fit_ridge_probe
from ase_moma.property_model import PropertyModel
from ase_moma.training.engine import EngineResult, Schedule, TrainingEngine
from ase_moma.training.run_settings import RunSettings
from ase_moma.training.work_folder import WorkFolder

OOF_FOLDS = 5
"""Folds of the training structures for their out-of-fold graph predictions: each fit sees 80 % of
them, near the whole set's fit, for five ridge fits."""
BLEND_STEP = 0.05
"""Grid spacing of the blend weights in the linear start: finer than any difference a hundred
structures' MAE can tell apart, coarse enough to try every blend of two views (231) in a moment."""
MEMBERS = 3
"""Members of a fusion, averaged. One member's test error moves by several percent with its seed alone
(early stopping on a validation set of tens of structures, the forests' bootstraps, the folds): on the
shared whole-split tasks three seeds of one split gave test MAEs 2.76–3.17 (mp_poly_electronic) and
48–57 meV/atom (jarvis_2d_exfoliation). Averaging n members divides that part of the variance by n; three
cost three fits of seconds to a minute each and keep a module's fusion file to a few megabytes."""
EXPERT_VIEW_FITS = {JOINT: Forest.fit, BOOSTED: Forest.fit_boosted}
"""How each expert view's expert is grown (the views and why: :data:`~ase_moma.modalities.fused_model.DERIVED`)."""
MIN_TRAIN = 10
"""Fewest training structures fusion accepts: two per fold, so each out-of-fold fit has eight."""


@dataclass
class FusionConfig(RunSettings):
    """How the fusion head is trained.

    width: token width (64: a few times the number of views, small beside 100 training structures'
    worth of parameters per view); modality_dropout: chance a non-graph view of a structure is hidden
    in a training step (0.1: the head sees every view missing now and then, and learns from it most of
    the time); lr, weight_decay: AdamW's, for a head that starts at a ridge fit (1e-3, 1e-2);
    epochs, patience: at most this many passes, stopping when validation MAE has not improved for
    ``patience`` of them; batch_size: structures per step; experts: give each non-graph view a random
    forest fitted on the task (:mod:`ase_moma.modalities.forest`), whose disagreement with the graph
    model becomes one more column of that view, and the expert views: with two views or more a forest over
    all of them together (JOINT), and with composition gradient boosting on it (BOOSTED); members: fusion
    members averaged (MEMBERS), member k seeded ``seed + k``; learned_gates: train the query that gates
    the views per structure (False: it stays at zero, every gate 1/V).
    """

    width: int = 64
    modality_dropout: float = 0.1
    lr: float = 1e-3
    weight_decay: float = 1e-2
    epochs: int = 200
    patience: int = 20
    batch_size: int = 32
    experts: bool = True
    members: int = MEMBERS
    learned_gates: bool = True


@dataclass
class FusionResult:
    """model: the fused model, or None when the graph model alone was best on validation; record: what
    module.json keeps under ``"fusion"``; val_prediction: (M,) the kept model's validation predictions."""

    model: FusedPropertyModel | None
    record: dict[str, Any]
    val_prediction: np.ndarray


def fit_fusion(graph_model: PropertyModel, modalities: Sequence[str], train: tuple[Sequence[Any], LabelledSet],
               val: tuple[Sequence[Any], LabelledSet], config: FusionConfig | None = None,
               work: WorkFolder | None = None) -> FusionResult:
    """Fit a fusion head over ``modalities`` on top of the (trained, frozen) ``graph_model``.

    train, val: (graphs, labelled set) of each split, the graphs built by the model's backbone. work: the
    graph model's work folder; each member checkpoints in its stage ``fusion-K`` and resumes from it.
    """
    encoders = {name: build_modality(name) for name in sorted(modalities)}
    train_views = encode_views(graph_model, train[0], train[1].frames, encoders)
    val_views = encode_views(graph_model, val[0], val[1].frames, encoders)
    fit = fit_heads(train_views, train[1].targets, val_views, val[1].targets, config, work)
    fit.record["encoders"] = {name: encoder.identity() for name, encoder in encoders.items()}
    model = FusedPropertyModel(graph_model, fit.members, encoders).eval() if fit.members else None
    return FusionResult(model, fit.record, fit.val_prediction)


@dataclass
class HeadFit:
    """members: the fitted members, empty when the graph model alone is best on validation; record: what
    was fitted and chosen; val_prediction: (M,) the kept model's validation predictions (the graph model's
    when it is kept)."""

    members: list[FusionMember]
    record: dict[str, Any]
    val_prediction: np.ndarray


def fit_heads(train_views: Views, train_targets: np.ndarray, val_views: Views, val_targets: np.ndarray,
              config: FusionConfig | None = None, work: WorkFolder | None = None) -> HeadFit:
    """Fit ``config.members`` fusion members on views already encoded (as :func:`encode_views` gives them)
    and keep their mean when it beats the graph model on validation. work: where member K checkpoints
    (its stage ``fusion-K``; None: no checkpoints)."""
    config = config or FusionConfig()
    if len(train_targets) < MIN_TRAIN:
        raise ValueError(f"fusion needs at least {MIN_TRAIN} training structures (its graph predictions are "
                         f"out-of-fold over {OOF_FOLDS} folds), got {len(train_targets)}")
    if config.members < 1:
        raise ValueError(f"fusion needs at least one member, got {config.members}")
    y_val = np.asarray(val_targets, dtype=np.float64)
    member_configs = [dataclasses.replace(config, seed=config.seed + k) for k in range(config.members)]
    fits = [fit_member(train_views, train_targets, val_views, y_val, member,
                       work.stage(f"fusion-{k}", dataclasses.asdict(member)) if work is not None else None)
            for k, member in enumerate(member_configs)]
    members = [member for member, _ in fits]
    names = sorted(name for name in val_views.features if name != GRAPH)
    fused = fuse_members(members, val_views, names)
    val_prediction = fused.values
    scores = {"graph only": float(np.mean(np.abs(val_views.graph_prediction.double().numpy() - y_val))),
              "fused": float(np.mean(np.abs(val_prediction - y_val)))}
    kept = "fused" if scores["fused"] < scores["graph only"] else "graph only"
    head = members[0].head
    record = {
        "views": list(head.names), "kept": kept, "val_mae": scores,
        "train_graph_prediction": f"out-of-fold ridge on the frozen pooled features, {OOF_FOLDS} folds",
        "experts": sorted(members[0].experts), "members": [member_record for _, member_record in fits],
        "missing_train": {name: int((~train_views.present[name]).sum()) for name in names},
        "val_gates_mean": dict(zip(head.names, map(float, fused.gates.mean(0)))) if kept == "fused" else None,
        "val_contribution_mean_abs": dict(zip(fused.names, map(float, np.abs(fused.terms).mean(0))))
        if kept == "fused" else None,
        "head": head_config(head), "config": dataclasses.asdict(config),
    }
    if kept == "graph only":
        return HeadFit([], record, val_views.graph_prediction.double().numpy())
    return HeadFit(members, record, val_prediction)


def fit_member(train_views: Views, train_targets: np.ndarray, val_views: Views, val_targets: np.ndarray,
               config: FusionConfig, work: WorkFolder | None = None) -> tuple[FusionMember, dict[str, Any]]:
    """One fusion member seeded ``config.seed``: its forests, its head (the linear start, then trained, the
    better of the two on validation), and what was fitted and chosen.

    The head sees the training structures' out-of-fold graph predictions (:func:`out_of_fold`) and the
    validation structures' own. Every non-graph view gets its forest (out-of-fold on the training structures
    too) when ``config.experts``, and so does each expert view that applies (a forest over every view
    together, JOINT; gradient boosting on composition, BOOSTED). The views given are left as they are.
    work: the head's checkpoint folder and run hash (None: no checkpoints).
    """
    y_train = np.asarray(train_targets, dtype=np.float64)
    y_val = np.asarray(val_targets, dtype=np.float64)
    train_views = dataclasses.replace(
        train_views, graph_prediction=out_of_fold(train_views.features[GRAPH].numpy(), y_train, config.seed))
    others = [name for name in sorted(train_views.features) if name != GRAPH]
    experts: dict[str, Forest] = {}
    derived = {name: fit for name, fit in EXPERT_VIEW_FITS.items() if config.experts and derived_reads(name, others)}
    # what the expert views read, taken before the per-view columns are appended
    derived_train = {name: joint_features(train_views, derived_reads(name, others)) for name in derived}
    derived_val = {name: joint_features(val_views, derived_reads(name, others)) for name in derived}
    for name in others if config.experts else []:
        have = train_views.present[name].numpy()
        if have.sum() < MIN_TRAIN:
            continue
        features = train_views.features[name].numpy()
        experts[name] = Forest.fit(features[have], y_train[have], config.seed)
        train_views = with_expert(train_views, name, out_of_fold(features, y_train, config.seed, have, Forest.fit))
        val_views = with_expert(val_views, name, experts[name].predict(val_views.features[name].numpy()))
    for name, fit in derived.items():
        (features, have), (val_features, val_have) = derived_train[name], derived_val[name]
        if have.sum() < MIN_TRAIN:
            continue
        experts[name] = fit(features[have], y_train[have], config.seed)
        train_views = with_derived(train_views, name, out_of_fold(features, y_train, config.seed, have, fit).numpy(),
                                   have)
        val_views = with_derived(val_views, name, experts[name].predict(val_features), val_have)
    others = [name for name in sorted(train_views.features) if name != GRAPH]  # the expert views among them now
    with torch.random.fork_rng():  # seeded head weights; the caller's random state is left as it was
        torch.manual_seed(config.seed)
        head = FusionHead(train_views.features[GRAPH].shape[1],
                          {name: train_views.features[name].shape[1] for name in others},
                          config.width, config.modality_dropout).double()
    head.fit_normalisation(train_views.features, train_views.present)

    def val_mae() -> float:
        with torch.no_grad():
            prediction = head(val_views.graph_prediction, val_views.features, val_views.present)[0]
        return float(np.mean(np.abs(prediction.numpy() - y_val)))

    residual = y_train - train_views.graph_prediction.numpy()
    start_record = linear_start(head, train_views, residual, list(experts))
    head.eval()
    start = val_mae()
    start_state = copy.deepcopy(head.state_dict())
    with torch.random.fork_rng():
        torch.manual_seed(config.seed)
        result = _train(head, train_views, torch.as_tensor(y_train), val_mae, config, work)
    trained = result.best["val_mae"]
    start_name = "linear start" if start_record["steps"] else "zero start"
    scores = {start_name: start, "trained": trained}
    kept = "trained" if trained < start else start_name
    if kept != "trained":
        head.load_state_dict(start_state)
    record = {"seed": config.seed, "kept": kept, "val_mae": scores, "epochs_run": result.epochs_run,
              "resumed_from": result.resumed_from, "start": start_record}
    return FusionMember(head, experts), record


def linear_start(head: FusionHead, views: Views, residual: np.ndarray, experts: Sequence[str]) -> dict[str, Any]:
    """Set the head's linear read-outs in two steps on the graph model's out-of-fold ``residual``.

    1. a blend of the graph model with each view's forest: y = y_graph + Σ_v w_v (e_v − y_graph) with
       w_v ≥ 0, Σ w_v ≤ 1 on a grid of BLEND_STEP, the blend with the lowest out-of-fold MAE. A convex
       blend of predictions has no scale to overfit, and MAE (not squared error) keeps a few outliers of a
       heavy-tailed target from choosing it;
    2. a ridge fit of what step 1 left on every column of every view (leave-one-out α), kept only when
       its leave-one-out MAE beats the MAE of what it was fitted to.
    The record says which steps were kept; with neither, the head stays at zero correction.
    """
    blocks = head.standardised_blocks(views.features, views.present)
    weights = {name: np.zeros(block.shape[1]) for name, block in blocks.items()}
    bias, left, steps = 0.0, residual.copy(), []
    if experts:
        scale = {name: float(getattr(head, f"scale_{name}")[-1]) for name in experts}
        mean = {name: float(getattr(head, f"mean_{name}")[-1]) for name in experts}
        disagreement = np.stack([blocks[name][:, -1] * scale[name] + mean[name] for name in experts], axis=1)
        blend = _best_blend(disagreement, left)
        if blend.any():
            for index, name in enumerate(experts):  # w (e − y_graph) on the z-scored column
                weights[name][-1] += blend[index] * scale[name]
                bias += blend[index] * mean[name]
            left = left - disagreement @ blend
            steps.append({"step": "blend", "weights": dict(zip(experts, map(float, blend))),
                          "mae": float(np.mean(np.abs(left)))})
    every = np.concatenate([blocks[name] for name in head.names], axis=1)
    probe = fit_ridge_probe(every, left)
    if probe.loo_mae < float(np.mean(np.abs(left))):
        start = 0
        for name in head.names:
            width = blocks[name].shape[1]
            weights[name] += probe.weight[start:start + width]
            start += width
        bias += probe.bias
        steps.append({"step": "every view", "alpha": probe.alpha, "loo_mae": probe.loo_mae})
    head.set_linear(weights, bias)
    return {"residual_mae": float(np.mean(np.abs(residual))), "steps": steps}


def _best_blend(disagreement: np.ndarray, residual: np.ndarray) -> np.ndarray:
    """The blend weights (E,) of :func:`_blends` whose blend of the (M, E) ``disagreement`` columns leaves the
    lowest MAE of the (M,) ``residual``; of equal ones, the one with the smallest sum."""
    grid = _blends(disagreement.shape[1])  # (K, E), the smallest sums first
    errors = np.concatenate([np.abs(residual[:, None] - disagreement @ part.T).mean(axis=0)
                             for part in np.array_split(grid, max(1, len(grid) // 2048))])
    return grid[int(np.argmin(errors))]


@functools.lru_cache(maxsize=None)
def _blends(count: int) -> np.ndarray:
    """(K, ``count``) read-only: every weight vector of ``count`` non-negative multiples of BLEND_STEP
    summing to at most 1, the smallest sums first. Cached: every member's linear start searches it."""
    steps = int(round(1 / BLEND_STEP))

    def compositions(parts: int, most: int) -> list[tuple[int, ...]]:
        if parts == 0:
            return [()]
        return [(first, *rest) for first in range(most + 1) for rest in compositions(parts - 1, most - first)]

    grid = np.array(sorted(compositions(count, steps), key=sum), dtype=float).reshape(-1, count) * BLEND_STEP
    grid.flags.writeable = False
    return grid


def out_of_fold(features: np.ndarray, targets: np.ndarray, seed: int = 0, usable: np.ndarray | None = None,
                fit: Callable[..., Any] | None = None) -> torch.Tensor:
    """(M,) prediction of each row by a model of ``features`` (M, F) fitted on the other folds' usable rows.

    fit: ``fit(features, targets, seed)`` → an object with ``predict``; by default the ridge probe.
    usable: (M,) rows that may be fitted on (default all); every row gets a prediction.
    """
    rows = len(targets)
    usable = np.ones(rows, dtype=bool) if usable is None else usable
    folds = np.random.default_rng(seed).permutation(rows) % min(OOF_FOLDS, rows)
    predictions = np.empty(rows)
    for fold in np.unique(folds):
        held, train = folds == fold, (folds != fold) & usable
        model = fit(features[train], targets[train], seed) if fit else fit_ridge_probe(features[train], targets[train])
        predictions[held] = model.predict(features[held])
    return torch.as_tensor(predictions)


def head_config(head: FusionHead) -> dict[str, Any]:
    """The arguments that rebuild ``head`` (its weights are in ``fusion.safetensors``)."""
    return {"graph_width": head.project[GRAPH].in_features,
            "widths": {name: head.project[name].in_features for name in head.names if name != GRAPH},
            "width": head.query.shape[0], "modality_dropout": head.modality_dropout}


def _train(head: FusionHead, views: Views, targets: torch.Tensor, val_mae: Callable[[], float],
           config: FusionConfig, work: WorkFolder | None) -> EngineResult:
    """Train ``head`` in place through the training engine (AdamW on the normalised Huber loss, early stopping
    on validation MAE, a checkpoint in ``work`` after every epoch); leave it at its best validation state."""
    scale = float(targets.std()) or 1.0
    trained = [value for name, value in head.named_parameters() if config.learned_gates or name != "query"]

    def loss(rows: Sequence[int]) -> torch.Tensor:
        batch = views.rows(rows)
        prediction, _ = head(batch.graph_prediction, batch.features, batch.present)
        return torch.nn.functional.huber_loss(prediction / scale, targets[rows] / scale, delta=1.0)

    engine = TrainingEngine(dict(head.state_dict(keep_vars=True)),
                            torch.optim.AdamW(trained, lr=config.lr, weight_decay=config.weight_decay),
                            Schedule(config.epochs, config.batch_size, config.patience, config.seed),
                            "val_mae", modes=head.train, progress=False, desc="fusion", work=work)
    return engine.run(len(targets), loss, lambda: {"val_mae": val_mae()})


def add_fusion(meta: dict[str, Any], tensors: dict[str, dict[str, torch.Tensor]], graph_model: PropertyModel,
               modalities: Sequence[str], parts: dict[str, tuple[Sequence[Any], LabelledSet]],
               config: FusionConfig | None = None, work: WorkFolder | None = None) -> FusedPropertyModel | None:
    """Fit fusion over ``modalities`` for a trained module and record it in the module's files.

    meta, tensors: the module.json content and safetensors files about to be written (changed in place:
    ``meta["fusion"]`` always; when fusion is kept, ``tensors[FUSION]`` and ``meta["metrics"]``'s
    val/test entries become the fused model's, the graph model's kept under ``fusion.graph_metrics``).
    parts: graphs and labelled sets of every split. work: the graph model's work folder, which the members'
    checkpoints go in (see :func:`fit_fusion`). Returns the fused model, or None when it lost.
    """
    result = fit_fusion(graph_model, modalities, parts["train"], parts["val"], config, work)
    meta["fusion"] = result.record
    if result.model is None:
        return None
    tensors[FUSION] = member_tensors(result.model.members)
    metrics = meta["metrics"]
    result.record["graph_metrics"] = {key: value for key, value in metrics.items() if key.startswith(("val_", "test_"))}
    for part in ("val", "test"):
        if part not in parts:
            continue
        graphs, subset = parts[part]
        if part == "val":  # encoded and predicted while fitting
            prediction = result.val_prediction
        else:
            prediction = result.model.fuse(encode_views(graph_model, graphs, subset.frames, result.model.encoders)).values
        error = prediction - subset.targets
        metrics[f"{part}_mae"] = float(np.mean(np.abs(error)))
        metrics[f"{part}_rmse"] = float(np.sqrt(np.mean(error ** 2)))
    return result.model


def fusion_summary(record: dict[str, Any], unit: str) -> str:
    """One line for the command line: what fusion kept, its validation MAE against the graph model's, and
    when it was kept what each term of the correction moved the validation predictions by on average (mean
    |term|, in ``unit``) and the mean gates."""
    scores = record["val_mae"]
    kept = f"mean of {len(record['members'])} fusion heads" if record["kept"] == "fused" else record["kept"]
    line = (f"fusion over {', '.join(record['views'])}: kept the {kept} (validation MAE "
            + ", ".join(f"{name} {value:.4g}" for name, value in scores.items()) + f" {unit})")
    if record.get("val_contribution_mean_abs"):
        line += f"; mean |contribution|{f' ({unit})' if unit else ''} " + ", ".join(
            f"{name} {value:.3g}" for name, value in record["val_contribution_mean_abs"].items())
    if record.get("val_gates_mean"):
        line += "; mean gates " + ", ".join(f"{name} {value:.2f}" for name, value in record["val_gates_mean"].items())
    missing = {name: count for name, count in record.get("missing_train", {}).items() if count}
    if missing:
        line += "; training structures without " + ", ".join(f"{name}: {count}" for name, count in missing.items())
    return line
