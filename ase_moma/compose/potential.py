"""Composing a potential from a hub's potential modules for a user's few labelled frames.

``compose_potential`` scores every potential module (a ``delta`` module: a
fine-tuned potential stored as its change from the pretrained weights) on the
frames, and the pretrained potential beside them; chooses weights (``amc``:
the convex fit of :mod:`~ase_moma.compose.potential_weights`, or MoMa's kNN
proxy on per-atom energies; or a baseline); merges the deltas
(:mod:`~ase_moma.compose.delta_merge`); refits the per-element reference
energies to the frames; and writes a composed folder that
``load_calculator(OUT)`` runs and ``finetune --backbone OUT`` continues from.

The pretrained potential is always a candidate, so ``amc`` never starts worse
than not composing on the frames: when the merged model's loss there is above
the pretrained potential's (the merge is not the average of predictions the
weights were fitted to), the composition falls back to the pretrained weights
and the recipe says so.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from ase import Atoms
from ase.data import chemical_symbols

from ase_moma.atomic_io import atomic_directory
from ase_moma.backbone import Backbone
from ase_moma.compose.delta_merge import MERGES, merge_deltas
from ase_moma.compose.knn import knn_proxy, spearman
from ase_moma.compose.merge import MIN_WEIGHT
from ase_moma.compose.potential_scores import FramePredictions, frame_errors, predict_frames, reference_shifts
from ase_moma.compose.potential_weights import solve_potential_weights
from ase_moma.compose.recipe import CHART, RECIPE_FORMAT, MERGED, RECIPE, relative_paths
from ase_moma.compose.report import weights_chart
from ase_moma.compose.weights import WeightSolution, solve_weights
from ase_moma.delta import Delta, apply_delta, read_delta
from ase_moma.finetune.loss import PotentialLoss
from ase_moma.finetune.potential_data import read_potential_set
from ase_moma.hub.store import Hub
from ase_moma.labelled_set import LabelledSet, structures_hash
from ase_moma.module_files import DELTA, load_tensors, save_tensors, write_json
from ase_moma.structures import has_volume, read_structures
from ase_moma.version import CREATED_BY

POTENTIAL_STRATEGIES = ("amc", "all_average", "best_single", "no_hub")
PROXIES = ("errors", "knn")
TARGET = "potential"
"""The recipe's ``task.target`` for a composed potential (energies, forces and stress, not one property)."""


def compose_potential(hub: Hub | str | Path, data: str | Path | Sequence[Atoms], out: str | Path, *,
                      strategy: str = "amc", proxy: str = "errors", merge: str = "sign_consensus",
                      modules: Sequence[str] | None = None, refit_references: bool = True,
                      loss: PotentialLoss | None = None, k: int = 5, temperature: float = 0.2,
                      solver: str | None = None, device: str = "auto", cache_dir: str | Path | None = None,
                      overwrite: bool = False) -> dict[str, Any]:
    """Compose a potential for the labelled frames ``data`` from ``hub``'s potential modules; write OUT/.

    data: a file any ase.io format reads (or frames) with energies; forces and stress are used where
    every frame has them. strategy: ``amc`` (weights fitted over the pretrained potential and the
    modules), ``all_average`` (1/N over the modules), ``best_single`` (the module the proxy ranks
    first) or ``no_hub`` (the pretrained potential). proxy: ``errors`` (each candidate's predictions on
    the frames; ``amc`` fits the loss of their weighted average) or ``knn`` (MoMa's leave-one-out kNN
    label propagation of per-atom energies in each candidate's embedding space, K = ``k``,
    temperature ``temperature``). merge: ``sign_consensus`` (the default: on held-out mlearn sets composed
    from modules of other chemistries it gave lower force errors than ``sum``, zero-shot and fine-tuned;
    bench/RESULTS.md) or ``sum`` (the first-order equivalent of the weighted average of predictions the
    weights are fitted to: right when the frames mix what the modules learned); see
    :mod:`~ase_moma.compose.delta_merge`. refit_references: refit each element's reference energy
    to the frames after merging. loss: the fine-tuning loss whose weights score the candidates
    (default 1 : 10 : 100 for energy, forces, stress). cache_dir: where each candidate's predictions on
    these frames are kept, keyed by its weights' sha256 and the frames (default
    ``HUB/.cache/potential_predictions``), so another strategy, proxy or merge on the same frames runs
    no model. Returns the recipe.
    """
    hub = hub if isinstance(hub, Hub) else Hub(hub)
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists (pass overwrite=True / --overwrite to replace it)")
    for value, allowed, what in ((strategy, POTENTIAL_STRATEGIES, "strategy for a potential"),
                                 (proxy, PROXIES, "proxy"), (merge, MERGES, "merge")):
        if value not in allowed:
            raise ValueError(f"unknown {what} {value!r}; choose one of {', '.join(allowed)}")
    loss = loss or PotentialLoss()
    frames_source = _frames(data)
    labelled = potential_labels(frames_source, data)
    names = potential_candidates(hub, modules, labelled)
    metas = {name: hub.read_module(name) for name in names}
    if proxy == "knn" and strategy != "no_hub" and len(labelled) < k + 1:
        raise ValueError(f"the kNN proxy with K={k} needs at least K+1={k + 1} frames; {labelled.source} has "
                         f"{len(labelled)} (use --proxy errors)")

    timings: dict[str, float] = {}
    start = time.perf_counter()
    backbone = hub.load_backbone(device=device, dtype="float32")
    if refit_references:
        backbone.require("refitting reference energies (pass refit_references=False / --no-refit-references to "
                         "keep them)", "reference_energies")
    pretrained_state = {key: value.detach().clone() for key, value in backbone.model.state_dict().items()}
    graphs = [backbone.graph(atoms) for atoms in labelled.frames]
    deltas = {name: read_delta(load_tensors(hub.folder(name) / DELTA), hub.folder(name) / DELTA) for name in names}
    ask = {"forces": labelled.forces is not None, "stress": labelled.stress is not None}
    cache = PredictionCache(Path(cache_dir) if cache_dir is not None else hub.path / ".cache" / "potential_predictions",
                            structures_hash(labelled.frames), ask)
    predictions = {}
    for name in [None, *names]:
        key = hub.backbone["fingerprint"] if name is None else metas[name]["files"][DELTA]
        predictions[name] = cache.read(key)
        if predictions[name] is None:
            backbone.model.load_state_dict(pretrained_state)
            if name is not None:
                apply_delta(backbone.model, deltas[name], hub.folder(name) / DELTA)
            predictions[name] = cache.write(key, predict_frames(backbone, graphs, **ask))
    backbone.model.load_state_dict(pretrained_state)
    errors = {name: frame_errors(predictions[name], labelled, loss) for name in predictions}
    timings["scoring_s"] = time.perf_counter() - start

    start = time.perf_counter()
    knn = _knn_scores(hub, names, backbone, pretrained_state, graphs, labelled, k, temperature, device) \
        if proxy == "knn" and strategy != "no_hub" else None
    timings["knn_s"] = time.perf_counter() - start
    weights, solution = _weights(strategy, proxy, names, predictions, errors, knn, labelled, loss, solver)

    start = time.perf_counter()
    shapes = {key: value.shape for key, value in pretrained_state.items()}
    merged = merge_deltas([deltas[n] for n in names], [weights[n] for n in names], shapes, merge)
    composed = _evaluate(backbone, pretrained_state, merged, graphs, labelled, loss, ask)
    fallback = None
    if strategy == "amc" and composed["errors"]["loss"] > errors[None]["loss"]:
        fallback = (f"the merged model's loss on the frames ({composed['errors']['loss']:.4g}) was above the "
                    f"pretrained potential's ({errors[None]['loss']:.4g}); the pretrained weights are kept")
        weights = {name: 0.0 for name in names}
        merged, composed = {}, {"errors": errors[None], "energy": predictions[None].energy}
    shifts = reference_shifts(composed["energy"], labelled) if refit_references else {}
    timings["merge_s"] = time.perf_counter() - start

    recipe = {
        "schema": RECIPE_FORMAT.tag, "hub": str(hub.path.resolve()), "backbone": hub.backbone,
        "kind": "full", "strategy": strategy,
        "task": {"data": str(Path(data).resolve()) if isinstance(data, (str, Path)) else None, "target": TARGET,
                 "unit": "eV", "task": _task_name(data), "split": None, "split_source": "all frames",
                 "seed": 0, "n_train": None, "val_fraction": 0.0, "train_size": len(labelled),
                 "train_hash": labelled.data_hash(), "elements": labelled.elements()},
        "knn": {"k": k, "temperature": temperature, "similarity": "cosine"} if knn is not None else None,
        "solver": None if solution is None else {"name": solution.solver, "status": solution.status,
                                                 "seconds": solution.seconds, "proxy_error": solution.proxy_error},
        "excluded_same_task": [],
        "proxy_label": ("kNN proxy MAE (meV/atom)" if proxy == "knn" else "force MAE on the frames (meV/Å)"
                        if ask["forces"] else "energy MAE on the frames (meV/atom)"),
        "modules": [_module_entry(name, metas[name], weights[name], errors[name], labelled,
                                  None if knn is None else knn[name]) for name in names],
        "potential": {
            "proxy": proxy, "merge": merge, "loss": {key: getattr(loss, key) for key in
                                                     ("energy", "forces", "stress", "huber_delta")},
            "labels": ["energy"] + [key for key, used in ask.items() if used],
            "pretrained": {"weight": 1.0 - sum(weights.values()), "errors": errors[None],
                           "proxy_mae": _proxy_value(errors[None], None if knn is None else knn[None])},
            "composed_errors": composed["errors"], "fallback": fallback,
            "refit_references": refit_references,
            "reference_shifts": {chemical_symbols[z]: value for z, value in shifts.items()}},
        "timings": timings,
    }
    backbone.model.load_state_dict(pretrained_state)
    return write_potential_composition(hub, recipe, out, overwrite=overwrite, backbone=backbone)


def write_potential_composition(hub: Hub, recipe: dict[str, Any], out: Path, overwrite: bool = False,
                                backbone: Backbone | None = None) -> dict[str, Any]:
    """Merge the recipe's modules with its weights, merge method and reference shifts and write OUT/
    atomically (``merged.safetensors``: the whole state; ``recipe.json``; ``weights.png``); returns
    the final recipe. backbone: the hub's pretrained backbone, when the caller has it loaded (it is
    changed in place)."""
    start = time.perf_counter()
    backbone = backbone or hub.load_backbone(device="cpu", dtype="float32")
    used = [m for m in recipe["modules"] if m["weight"] > 0]
    deltas = [read_delta(load_tensors(hub.folder(m["name"]) / m["file"]), hub.folder(m["name"]) / m["file"])
              for m in used]
    shapes = {key: value.shape for key, value in backbone.model.state_dict().items()}
    merged = merge_deltas(deltas, [m["weight"] for m in used], shapes, recipe["potential"]["merge"])
    apply_delta(backbone.model, merged)
    shifts = {chemical_symbols.index(symbol): value
              for symbol, value in recipe["potential"]["reference_shifts"].items()}
    if shifts:
        backbone.add_reference_energies(shifts)
    with atomic_directory(out, overwrite=overwrite) as tmp:
        sha = save_tensors(tmp / MERGED, dict(backbone.model.state_dict()))
        recipe = dict(recipe, merged={"file": MERGED, "sha256": sha}, created_by=CREATED_BY)
        recipe["timings"] = dict(recipe["timings"], write_s=time.perf_counter() - start)
        write_json(tmp / RECIPE, relative_paths(recipe, out))
        weights_chart(recipe, tmp / CHART)
    return recipe


def is_potential(recipe: dict[str, Any]) -> bool:
    """Whether a composition recipe is a composed potential (not a property model's composition)."""
    return recipe.get("potential") is not None


def potential_labels(frames: list[Atoms], data: Any) -> LabelledSet:
    """The frames with their energies, and their forces and stress where every frame has them; a one-line
    error naming the frame that has no energy."""
    results = [atoms.calc.results if atoms.calc is not None else {} for atoms in frames]
    forces = all("forces" in r for r in results)
    stress = all("stress" in r for r in results) and all(has_volume(atoms) for atoms in frames)
    return read_potential_set(frames, forces=forces, stress=stress, what=_name(data))


def potential_candidates(hub: Hub, modules: Sequence[str] | None, data: LabelledSet) -> list[str]:
    """The hub's potential modules to score (``modules`` restricts them); refuses a hub without any, an
    unknown or non-potential name, and candidates none of which covers any frame's elements."""
    entries = {entry["name"]: entry for entry in hub.modules}
    if modules is not None:
        unknown = [name for name in modules if name not in entries]
        if unknown:
            raise ValueError(f"hub {hub.path} has no module {', '.join(map(repr, unknown))}")
        other = [name for name in modules if entries[name]["kind"] != "delta"]
        if other:
            raise ValueError(f"module {other[0]!r} of hub {hub.path} is a {entries[other[0]]['kind']} property "
                             "module, not a potential module (kind delta, written by `ase-moma finetune`)")
    names = [name for name, entry in entries.items() if entry["kind"] == "delta"
             and (modules is None or name in modules)]
    if not names:
        raise ValueError(f"hub {hub.path} has no potential modules: fine-tune one with `ase-moma finetune "
                         "--backbone ... -o OUT` and add it with `ase-moma hub add HUB OUT/module`")
    if all(_covered(hub.read_module(name), data) == 0 for name in names):
        raise ValueError(f"no potential module of hub {hub.path} covers any frame of {data.source} (elements "
                         f"{', '.join(data.elements())}): each was fitted to other elements")
    return names


def _covered(meta: dict[str, Any], data: LabelledSet) -> int:
    """How many frames of ``data`` hold only elements the module was fitted to (all of them when the
    module does not record its elements)."""
    elements = meta.get("elements")
    if elements is None:
        return len(data)
    return sum(set(atoms.get_chemical_symbols()) <= set(elements) for atoms in data.frames)


def _module_entry(name: str, meta: dict[str, Any], weight: float, errors: dict[str, float], data: LabelledSet,
                  knn: dict[str, Any] | None) -> dict[str, Any]:
    return {"name": name, "task": meta.get("task"), "kind": "delta", "file": DELTA, "sha256": meta["files"][DELTA],
            "weight": weight, "proxy_mae": _proxy_value(errors, knn), "errors": errors, "elements": meta.get("elements"),
            "covers_frames": _covered(meta, data), "method": meta.get("method"),
            **({"spearman": knn["spearman"]} if knn is not None else {})}


def _proxy_value(errors: dict[str, float], knn: dict[str, Any] | None) -> float:
    """What the weights chart shows of a candidate: its kNN proxy MAE (meV/atom), else its force MAE on the
    frames (meV/Å; energy MAE where the frames have no forces)."""
    return knn["mae"] if knn is not None else errors.get("forces_mae", errors["energy_mae"])


def _weights(strategy: str, proxy: str, names: list[str], predictions: dict[str | None, FramePredictions],
             errors: dict[str | None, dict[str, float]], knn: dict[str | None, dict[str, Any]] | None,
             data: LabelledSet, loss: PotentialLoss, solver: str | None
             ) -> tuple[dict[str, float], WeightSolution | None]:
    """``{module: weight}`` (what they leave of 1 is the pretrained potential's) and the AMC solution."""
    weights = {name: 0.0 for name in names}
    solution = None
    if strategy == "all_average":
        weights = {name: 1.0 / len(names) for name in names}
    elif strategy == "best_single":
        score = (lambda n: knn[n]["mae"]) if knn is not None else (lambda n: errors[n]["loss"])
        weights[min(names, key=score)] = 1.0
    elif strategy == "amc":
        candidates = [None, *names]
        if knn is not None:
            energy = data.energy / data.n_atoms()
            solution = solve_weights(np.stack([knn[c]["predictions"] for c in candidates]), energy, solver=solver)
        else:
            solution = solve_potential_weights([predictions[c] for c in candidates], data, loss, solver=solver)
        kept = np.where(solution.weights >= MIN_WEIGHT, solution.weights, 0.0)
        kept /= kept.sum()
        weights = {name: float(value) for name, value in zip(names, kept[1:])}
    return weights, solution


def _knn_scores(hub: Hub, names: list[str], backbone: Backbone, pretrained_state: dict[str, torch.Tensor],
                graphs: list[Any], data: LabelledSet, k: int, temperature: float,
                device: str) -> dict[str | None, dict[str, Any]]:
    """MoMa's proxy for each candidate: leave-one-out kNN predictions of the frames' per-atom energies in its
    embedding space, their MAE (meV/atom) and Spearman ρ."""
    from ase_moma.devices import resolve_device

    energy = data.energy / data.n_atoms()
    scores = {}
    for name in [None, *names]:
        backbone.model.load_state_dict(pretrained_state)
        if name is not None:
            apply_delta(backbone.model, read_delta(load_tensors(hub.folder(name) / DELTA)))
        embeddings = backbone.embed_graphs(graphs).double().numpy()
        predicted = knn_proxy(embeddings, energy, k=k, temperature=temperature, device=resolve_device(device))
        scores[name] = {"predictions": predicted, "mae": 1000 * float(np.abs(predicted - energy).mean()),
                        "spearman": spearman(predicted, energy)}
    backbone.model.load_state_dict(pretrained_state)
    return scores


def _evaluate(backbone: Backbone, pretrained_state: dict[str, torch.Tensor], merged: Delta, graphs: list[Any],
              data: LabelledSet, loss: PotentialLoss, ask: dict[str, bool]) -> dict[str, Any]:
    """The merged model's energies on the frames and its errors there (references refitted)."""
    backbone.model.load_state_dict(pretrained_state)
    apply_delta(backbone.model, merged)
    predicted = predict_frames(backbone, graphs, **ask)
    backbone.model.load_state_dict(pretrained_state)
    return {"errors": frame_errors(predicted, data, loss), "energy": predicted.energy}


class PredictionCache:
    """Candidates' predictions on one set of frames, on disk as safetensors keyed by the candidate's weights
    (sha256 or fingerprint), the frames' hash and which labels were predicted."""

    def __init__(self, folder: Path, frames_hash: str, ask: dict[str, bool]) -> None:
        self.folder, self.frames_hash, self.ask = folder, frames_hash, ask

    def _path(self, key: str) -> Path:
        import hashlib

        labels = ",".join(name for name, used in sorted(self.ask.items()) if used)
        return self.folder / (hashlib.sha256(f"{key}:{self.frames_hash}:{labels}".encode()).hexdigest()
                              + ".safetensors")

    def read(self, key: str) -> FramePredictions | None:
        path = self._path(key)
        if not path.is_file():
            return None
        tensors = {name: tensor.numpy() for name, tensor in load_tensors(path).items()}
        return FramePredictions(tensors["energy"], tensors.get("forces"), tensors.get("stress"))

    def write(self, key: str, predictions: FramePredictions) -> FramePredictions:
        from ase_moma.atomic_io import atomic_file

        tensors = {name: torch.from_numpy(np.ascontiguousarray(value)) for name, value in
                   (("energy", predictions.energy), ("forces", predictions.forces), ("stress", predictions.stress))
                   if value is not None}
        self.folder.mkdir(parents=True, exist_ok=True)
        with atomic_file(self._path(key)) as tmp:
            save_tensors(tmp, tensors)
        return predictions


def _frames(data: str | Path | Sequence[Atoms]) -> list[Atoms]:
    if isinstance(data, (str, Path)):
        return read_structures(data, "labelled frames")
    frames = list(data)
    if not frames:
        raise ValueError("no frames to compose a potential for")
    return frames


def _name(data: Any) -> str:
    """What read_potential_set calls the frames: a file's path, else ``the frames``."""
    return str(data) if isinstance(data, (str, Path)) else "frames"


def _task_name(data: Any) -> str:
    return Path(data).stem if isinstance(data, (str, Path)) else "frames"
