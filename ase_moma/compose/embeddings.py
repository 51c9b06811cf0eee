"""Step 1 of AMC: embed the task's structures with every hub module.

Each structure's graph is built once and reused for every module; the
backbone is loaded once and each module is swapped into it in turn (full
weights loaded over the pretrained ones, or adapters attached), so one
module is in memory at a time. Embeddings are cached on disk as safetensors,
keyed by the module's weight checksum and the structures' hash, so a second
run with the same hub and data does no forward pass.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch
from ase import Atoms
from tqdm.auto import tqdm

from ase_moma.atomic_io import atomic_file
from ase_moma.backbone import Backbone
from ase_moma.module_files import load_tensors, save_tensors, weights_file
from ase_moma.hub.store import Hub
from ase_moma.labelled_set import structures_hash
from ase_moma.property_model import PropertyModel


def module_embeddings(hub: Hub, names: Sequence[str], structures: Sequence[Atoms], *,
                      device: str = "auto", batch_size: int = 32, cache_dir: str | Path | None = None,
                      progress: bool = True) -> dict[str, np.ndarray]:
    """``{module: (M, F) float64}`` mean-pooled invariant node features of each structure.

    cache_dir: where embeddings are kept between runs (default ``HUB/.cache/embeddings``).
    """
    if not names:
        raise ValueError(f"hub {hub.path} has no modules to compose")
    cache = Path(cache_dir) if cache_dir is not None else hub.path / ".cache" / "embeddings"
    data_key = structures_hash(structures)
    keys = {name: _cache_key(_weights_sha(hub.read_module(name)), data_key) for name in names}
    result = {name: _read_cached(cache / f"{keys[name]}.safetensors") for name in names}
    missing = [name for name in names if result[name] is None]
    if missing:
        backbone = hub.load_backbone(device=device, dtype="float32")
        graphs = [backbone.graph(atoms) for atoms in structures]
        for name, _ in modules_in_turn(hub, tqdm(missing, disable=not progress, unit="module", desc="embed"),
                                       backbone):
            result[name] = backbone.embed_graphs(graphs, batch_size).double().numpy()
            with atomic_file(cache / f"{keys[name]}.safetensors") as tmp:
                save_tensors(tmp, {"embeddings": torch.from_numpy(result[name])})
    return result


def modules_in_turn(hub: Hub, names: Iterable[str], backbone: Backbone) -> Iterator[tuple[str, PropertyModel]]:
    """``(name, model)`` for each hub module of ``names``, loaded into ``backbone`` one at a time: the
    pretrained weights are put back before each module (a ``full`` one overwrites them) and after the last,
    and a module's adapters are detached once the caller is done with it."""
    pretrained = {key: value.clone() for key, value in backbone.model.state_dict().items()}
    try:
        for name in names:
            backbone.model.load_state_dict(pretrained)
            model = hub.load_module(name, backbone=backbone)
            try:
                yield name, model
            finally:
                if model.adapters is not None:
                    model.adapters.detach()
    finally:
        backbone.model.load_state_dict(pretrained)


def _cache_key(weights_sha256: str, data_key: str) -> str:
    return hashlib.sha256(f"{weights_sha256}:{data_key}".encode()).hexdigest()


def _read_cached(path: Path) -> np.ndarray | None:
    return load_tensors(path)["embeddings"].numpy() if path.is_file() else None


def _weights_sha(meta: dict) -> str:
    return meta["files"][weights_file(meta)]
