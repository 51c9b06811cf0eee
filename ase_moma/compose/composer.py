"""MoMa Algorithm 1, steps 1–4: from a hub and a small labelled dataset to a merged model in OUT/.

OUT/ holds ``recipe.json`` (what was composed and how: modules with their
sha256, weights, proxy MAE and Spearman ρ, the kNN settings, the solver, the
data and the timings), ``merged.safetensors`` (the merged backbone weights of
``full`` modules or the merged adapters of ``adapter`` modules; absent for the
``no_hub`` baseline) and ``weights.png``. OUT/ appears whole or not at all.
Step 5, fine-tuning, is :func:`ase_moma.compose.finetune.finetune_composed`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ase_moma.atomic_io import atomic_directory
from ase_moma.compose.embeddings import module_embeddings
from ase_moma.compose.knn import knn_proxy, spearman
from ase_moma.compose.merge import merge_safetensors
from ase_moma.compose.recipe import CHART, RECIPE_FORMAT, MERGED, RECIPE, relative_paths, resolve_paths
from ase_moma.compose.report import weights_chart
from ase_moma.compose.strategies import STRATEGIES, strategy_weights
from ase_moma.devices import resolve_device
from ase_moma.hub.store import Hub
from ase_moma.labelled_data import load_task_data
from ase_moma.module_files import TRAINED_KINDS, read_record, save_tensors, weights_file, write_json
from ase_moma.version import CREATED_BY



def compose(hub: Hub | str | Path, data: str | Path, target: str, out: str | Path, *,
            split: str | Path | None = None, task: str | None = None, seed: int = 0,
            n_train: int | None = None, val_fraction: float = 0.1, unit: str = "",
            strategy: str = "amc", kind: str | None = None, modules: Sequence[str] | None = None,
            k: int = 5, temperature: float = 0.2, similarity: str = "cosine", solver: str | None = None,
            softmax_temperature: float = 1.0, device: str = "auto", batch_size: int = 32,
            cache_dir: str | Path | None = None, overwrite: bool = False,
            progress: bool = True) -> dict[str, Any]:
    """Compose a model for ``atoms.info[target]`` of ``data`` from the hub's modules; write OUT/.

    The kNN proxy runs on the training split (``split`` file and ``task`` key,
    else a random split with ``val_fraction`` and ``seed``; ``n_train``
    subsamples it for few-shot runs). kind: compose the hub's ``full`` or
    ``adapter`` modules (default: full when the hub has any); modules:
    restrict to these names. A module trained on the target task itself (its
    module.json ``task`` equals ``task``, default the data file's stem) is
    never used — leave one task out — and the recipe lists it under
    ``excluded_same_task``. k, temperature, similarity: the kNN proxy
    (MoMa's settings: K = 5, temperature 0.2, cosine). strategy: ``amc`` or a baseline (see
    :func:`~ase_moma.compose.strategies.strategy_weights`). Returns the recipe.
    """
    hub = hub if isinstance(hub, Hub) else Hub(hub)
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists (pass overwrite=True / --overwrite to replace it)")
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    task = task or Path(data).stem
    names, kind, excluded = _candidates(hub, kind, modules, task)
    metas = {name: hub.read_module(name) for name in names}  # verifies files and backbone fingerprints
    task_data = load_task_data(data, target, split, task, val_fraction=val_fraction, seed=seed,
                               max_train=n_train)
    train = task_data.train
    if len(train) < k + 1:
        raise ValueError(f"the kNN proxy with K={k} needs at least K+1={k + 1} training structures; "
                         f"the training split of {data} has {len(train)}")

    timings: dict[str, float] = {}
    start = time.perf_counter()
    embeddings = module_embeddings(hub, names, train.frames, device=device, batch_size=batch_size,
                                   cache_dir=cache_dir, progress=progress) if strategy != "no_hub" else {}
    timings["embedding_s"] = time.perf_counter() - start

    start = time.perf_counter()
    predictions = np.stack([knn_proxy(embeddings[name], train.targets, k=k, temperature=temperature,
                                      similarity=similarity, device=resolve_device(device))
                            for name in names]) if embeddings else np.zeros((0, len(train)))
    proxy_mae = np.abs(predictions - train.targets).mean(axis=1)
    timings["knn_s"] = time.perf_counter() - start

    weights, solution = strategy_weights(strategy, predictions, train.targets, proxy_mae, solver=solver,
                                         seed=seed, softmax_temperature=softmax_temperature)
    timings["solver_s"] = solution.seconds if solution is not None else 0.0
    recipe = {
        "schema": RECIPE_FORMAT.tag, "hub": str(hub.path.resolve()), "backbone": hub.backbone, "kind": kind,
        "strategy": strategy,
        "task": {"data": str(Path(data).resolve()), "target": target, "unit": unit,
                 "task": task, "split": str(Path(split).resolve()) if split else None,
                 "split_source": task_data.split_source, "seed": seed, "n_train": n_train,
                 "val_fraction": val_fraction, "train_size": len(train), "train_hash": train.data_hash()},
        "knn": {"k": k, "temperature": temperature, "similarity": similarity},
        "solver": None if solution is None else {
            "name": solution.solver, "status": solution.status, "seconds": solution.seconds,
            "proxy_error": solution.proxy_error},
        "softmax_temperature": softmax_temperature if strategy == "softmax" else None,
        "excluded_same_task": excluded,
        "modules": [{"name": name, "task": metas[name].get("task"), "kind": metas[name]["kind"],
                     "file": weights_file(metas[name]),
                     "sha256": metas[name]["files"][weights_file(metas[name])],
                     "weight": float(weights[j]) if len(weights) else 0.0,
                     "proxy_mae": float(proxy_mae[j]),
                     "spearman": spearman(predictions[j], train.targets)}
                    for j, name in enumerate(names) if embeddings],
        "timings": timings,
    }
    return write_composition(hub, recipe, out, overwrite=overwrite)


def replay(recipe_path: str | Path, out: str | Path, *, hub: Hub | str | Path | None = None,
           overwrite: bool = False) -> dict[str, Any]:
    """Rebuild a composition from its ``recipe.json``: the recorded modules and weights, merged again.

    hub: where the modules are (default: the hub the recipe names). Each
    module's weights must still have the recorded sha256; the merged file is
    then identical to the original's.
    """
    recipe = resolve_paths(read_record(Path(recipe_path), RECIPE_FORMAT), Path(recipe_path).parent)
    hub = hub if isinstance(hub, Hub) else Hub(hub or recipe["hub"])
    if hub.backbone["fingerprint"] != recipe["backbone"]["fingerprint"]:
        raise ValueError(f"hub {hub.path} holds modules of another backbone than the recipe {recipe_path}")
    for entry in recipe["modules"]:
        if entry["weight"] > 0:
            meta = hub.read_module(entry["name"])
            sha = meta["files"][weights_file(meta)]
            if sha != entry["sha256"]:
                raise ValueError(f"module {entry['name']} in {hub.path} changed since the recipe was written "
                                 f"(sha256 {sha[:16]}…, recipe {entry['sha256'][:16]}…)")
    recipe = dict(recipe, replayed_from=str(Path(recipe_path).resolve()))
    if recipe.get("potential") is not None:
        from ase_moma.compose.potential import write_potential_composition

        return write_potential_composition(hub, recipe, Path(out), overwrite=overwrite)
    return write_composition(hub, recipe, Path(out), overwrite=overwrite)


def write_composition(hub: Hub, recipe: dict[str, Any], out: Path, overwrite: bool = False) -> dict[str, Any]:
    """Merge the recipe's modules with its weights and write OUT/ atomically; returns the final recipe."""
    used = [m for m in recipe["modules"] if m["weight"] > 0]
    start = time.perf_counter()
    with atomic_directory(out, overwrite=overwrite) as tmp:
        merged_sha = None
        if used:
            base = None
            if any(m["kind"] == "delta" for m in used):
                base = hub.load_backbone(device="cpu", dtype="float32").model.state_dict()
            merged = merge_safetensors([hub.folder(m["name"]) / m["file"] for m in used],
                                       [m["weight"] for m in used], base)
            merged_sha = save_tensors(tmp / MERGED, merged)
            del merged
        recipe = dict(recipe, merged={"file": MERGED, "sha256": merged_sha} if merged_sha else None,
                      created_by=CREATED_BY)
        recipe["timings"] = dict(recipe["timings"], merge_s=time.perf_counter() - start)
        write_json(tmp / RECIPE, relative_paths(recipe, out))
        weights_chart(recipe, tmp / CHART)
    return recipe


def _candidates(hub: Hub, kind: str | None, modules: Sequence[str] | None,
                task: str) -> tuple[list[str], str, list[str]]:
    """The modules to compose, their kind, and the ones left out because they were trained on ``task``."""
    entries = hub.modules
    if not entries:
        raise ValueError(f"hub {hub.path} has no modules to compose; add some with `ase-moma hub train`")
    if modules is not None:
        known = {e["name"] for e in entries}
        unknown = [name for name in modules if name not in known]
        if unknown:
            raise ValueError(f"hub {hub.path} has no module {', '.join(map(repr, unknown))}")
        entries = [e for e in entries if e["name"] in set(modules)]
    kinds = {e["kind"] for e in entries}
    if kind is None:
        kind = "full" if "full" in kinds or "adapter" not in kinds else "adapter"
    if kind not in TRAINED_KINDS:
        raise ValueError(f"module kind must be one of {', '.join(TRAINED_KINDS)}, got {kind!r}")
    names = [e["name"] for e in entries if e["kind"] == kind]
    if not names:
        potentials = " (potential modules compose with --potential)" if "delta" in kinds else ""
        raise ValueError(f"hub {hub.path} has no {kind} property modules to compose (it has: "
                         f"{', '.join(sorted(kinds)) or 'none'}){potentials}")
    excluded = [e["name"] for e in entries if e["name"] in names and e.get("task") == task]
    names = [name for name in names if name not in excluded]
    if not names:
        raise ValueError(f"every {kind} module of hub {hub.path} was trained on task {task!r}; composing for "
                         f"it never uses its own modules (leave one task out), so nothing is left to compose")
    return names, kind, excluded
