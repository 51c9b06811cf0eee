"""The hub directory: ``hub.json`` plus one verified folder per module.

Every change happens under an exclusive lock on ``hub/.lock`` and in two atomic
steps: the module folder is written to a temporary sibling, fsynced and renamed
into ``modules/``; then ``hub.json`` is replaced by a complete new copy. A crash
at any point leaves the previous hub readable; a folder that made it into
``modules/`` without a ``hub.json`` entry is ignored by readers and replaced by
the next write of that name.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from ase_moma.atomic_io import atomic_directory, atomic_file
from ase_moma.backbone import Backbone
from ase_moma.errors import AseMomaError
from ase_moma.formats import Format, Migration
from ase_moma.module_files import (MODULE_JSON, HubIntegrityError, check_module_folder, check_module_kind,
                                   read_json, write_json, write_module_folder)
from ase_moma.module_model import module_from_folder
from ase_moma.property_model import PropertyModel
from ase_moma.provenance import backbone_record, load_recorded_backbone

HUB_JSON = "hub.json"


def _schema_named(record: dict[str, Any]) -> dict[str, Any]:
    record.pop("schema_version", None)
    return record


HUB_FORMAT = Format("ase-moma.hub", "hub index", unversioned=True, migrations=(
    Migration("the index names its format under \"schema\" as every other record does, not by an integer "
              "schema_version (always 1)", record=_schema_named),))
"""hub.json. Version 1 (release 0.1.0) carried ``"schema_version": 1`` and no ``"schema"``; a hub's index is
rewritten whole by every change, so a hub changed by this ase-moma holds the current version."""
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class ModuleNotFound(AseMomaError, KeyError):
    """No module of that name in the hub."""

    def __str__(self) -> str:
        return str(self.args[0])


def check_module_name(name: str) -> str:
    """``name`` if it is a valid module name (letters, digits, ``_.-``), else ValueError."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"invalid module name {name!r}: use letters, digits, '_', '.', '-' "
                         "(starting with a letter or digit, at most 128 characters)")
    return name


class Hub:
    """A hub directory of modules that share one pretrained backbone."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        meta = read_json(self.path / HUB_JSON, "hub index")
        if "schema" not in meta and meta.get("schema_version", 1) != 1:
            raise HubIntegrityError(f"{self.path / HUB_JSON} has schema_version {meta['schema_version']!r}; "
                                    "this ase-moma reads version 1 of that form")
        meta = HUB_FORMAT.read(meta, self.path / HUB_JSON)
        if not isinstance(meta.get("backbone"), dict) or "fingerprint" not in meta["backbone"]:
            raise HubIntegrityError(f"{self.path / HUB_JSON} does not record its backbone fingerprint")
        self.meta = meta

    @classmethod
    def create(cls, path: str | os.PathLike, backbone: Backbone) -> "Hub":
        """A new, empty hub for ``backbone`` (its name, package version, source, fingerprint)."""
        path = Path(path)
        if (path / HUB_JSON).exists():
            raise FileExistsError(f"{path} already holds a hub ({HUB_JSON} exists)")
        path.mkdir(parents=True, exist_ok=True)
        (path / "modules").mkdir(exist_ok=True)
        meta = HUB_FORMAT.current({"backbone": backbone_record(backbone), "modules": []})
        with atomic_file(path / HUB_JSON) as tmp:
            write_json(tmp, meta)
        return cls(path)

    @property
    def backbone(self) -> dict[str, Any]:
        """``{"name", "version", "source", "fingerprint"}`` of the shared backbone."""
        return dict(self.meta["backbone"])

    @property
    def modules(self) -> list[dict[str, Any]]:
        """The index entries (name, task, kind, target, unit, n_train, metrics, size), in order."""
        return [dict(entry) for entry in self.meta["modules"]]

    def names(self) -> list[str]:
        return [entry["name"] for entry in self.meta["modules"]]

    def folder(self, name: str) -> Path:
        if name not in self.names():
            raise ModuleNotFound(f"no module {name!r} in hub {self.path}; modules: {', '.join(self.names()) or 'none'}")
        return self.path / "modules" / name

    def read_module(self, name: str) -> dict[str, Any]:
        """Verified ``module.json`` of ``name`` (checksums, stray files, fingerprint)."""
        folder = self.folder(name)
        meta = check_module_folder(folder)
        self._check_compatible(meta, folder)
        return meta

    def index_entry_of(self, name: str) -> dict[str, Any]:
        """Module ``name``'s index entry rebuilt from its module.json (not verified: for listings)."""
        folder = self.folder(name)
        return index_entry(dict(read_json(folder / MODULE_JSON, "module metadata"), name=name),
                           sum(p.stat().st_size for p in folder.iterdir()))

    def verify(self) -> dict[str, str | None]:
        """``{module: None if it verifies, else the problem}`` for every module."""
        problems: dict[str, str | None] = {}
        for name in self.names():
            try:
                self.read_module(name)
                problems[name] = None
            except HubIntegrityError as error:
                problems[name] = str(error)
        return problems

    def load_backbone(self, device: str | torch.device = "auto", dtype: str | torch.dtype = "float32",
                      source: str | None = None, **options: Any) -> Backbone:
        """The pretrained backbone this hub was built on; refuses one with another fingerprint."""
        return load_recorded_backbone(self.backbone, f"hub {self.path}", device, dtype, source, **options)

    def load_module(self, name: str, device: str | torch.device = "auto",
                    dtype: str | torch.dtype = "float32", backbone: Backbone | None = None) -> PropertyModel:
        """Module ``name`` as a PropertyModel, after verifying every file it has.

        backbone: a backbone from :meth:`load_backbone` to reuse (a ``full``
        module overwrites its weights in place); else a fresh one is loaded.
        """
        meta = self.read_module(name)
        return module_from_folder(self.folder(name), meta, backbone or self.load_backbone(device, dtype))

    def write_module(self, name: str, meta: dict[str, Any],
                     tensors: dict[str, dict[str, torch.Tensor]], overwrite: bool = False) -> Path:
        """Write a module atomically: ``tensors`` maps file names to tensor dicts.

        ``meta`` is completed with the files' sha256, the backbone record and the
        creation time, then written as ``module.json``; the index follows.
        """
        check_module_name(name)

        def fill(folder: Path) -> None:
            write_module_folder(folder, dict(meta, name=name), tensors, self.meta["backbone"])

        return self._install(name, fill, overwrite)

    def add(self, folder: str | os.PathLike, name: str | None = None, overwrite: bool = False) -> str:
        """Import a module folder from elsewhere after verifying it; returns its name here."""
        source = Path(folder)
        meta = check_module_folder(source)
        self._check_compatible(meta, source)
        name = check_module_name(name or meta.get("name") or source.name)

        def fill(target: Path) -> None:
            for filename in meta["files"]:
                shutil.copyfile(source / filename, target / filename)
            # the source's own record, renamed: a copy keeps the format it was written in (its tensors are in
            # that format too), and is migrated when read like the original
            write_json(target / MODULE_JSON, dict(read_json(source / MODULE_JSON, "module metadata"), name=name))
            check_module_folder(target)  # the copy, too, before it goes live

        self._install(name, fill, overwrite)
        return name

    def remove(self, name: str) -> None:
        """Delete module ``name`` (index first, so a crash leaves no listed-but-missing module)."""
        with self._locked():
            self._reload()
            folder = self.folder(name)
            self._write_index([e for e in self.meta["modules"] if e["name"] != name])
            shutil.rmtree(folder)

    def _install(self, name: str, fill: Callable[[Path], None], overwrite: bool) -> Path:
        with self._locked():
            self._reload()
            listed = name in self.names()
            if listed and not overwrite:
                raise FileExistsError(f"hub {self.path} already has a module {name!r} "
                                      "(pass overwrite=True / --overwrite to replace it)")
            target = self.path / "modules" / name
            with atomic_directory(target, overwrite=True) as tmp:
                fill(tmp)
                meta = read_json(tmp / MODULE_JSON, "module metadata")
                size = sum(p.stat().st_size for p in tmp.iterdir())
            entry = index_entry(dict(meta, name=name), size)
            entries = [e for e in self.meta["modules"] if e["name"] != name] + [entry]
            self._write_index(entries)
            return target

    def _check_compatible(self, meta: dict[str, Any], folder: Path) -> None:
        ours = self.meta["backbone"]
        theirs = meta.get("backbone") or {}
        if theirs.get("name") != ours["name"]:
            raise HubIntegrityError(f"module {folder} was trained on backbone {theirs.get('name')!r}; "
                                    f"hub {self.path} holds {ours['name']!r} modules")
        if theirs.get("fingerprint") != ours["fingerprint"]:
            raise HubIntegrityError(
                f"module {folder} started from other pretrained {ours['name']} weights (fingerprint "
                f"{str(theirs.get('fingerprint'))[:16]}…, hub {ours['fingerprint'][:16]}…); merging "
                "needs modules fine-tuned from one shared initialisation"
            )
        check_module_kind(meta.get("kind"), str(folder / MODULE_JSON))

    def _reload(self) -> None:
        self.meta = Hub(self.path).meta

    def _write_index(self, entries: list[dict[str, Any]]) -> None:
        meta = HUB_FORMAT.current(dict(self.meta, modules=entries))
        with atomic_file(self.path / HUB_JSON) as tmp:
            write_json(tmp, meta)
        self.meta = meta

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self.path / ".lock", os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def index_entry(meta: dict[str, Any], size_bytes: int) -> dict[str, Any]:
    """The hub.json row of a module: what ``hub list`` shows without opening the module. A potential
    module (kind ``delta``) adds its elements, method, fraction of path weights moved and validation
    errors (energy meV/atom, forces meV/Å, stress GPa)."""
    metrics = meta.get("metrics", {})
    entry = {"name": meta["name"], "task": meta.get("task"), "kind": meta["kind"],
             "target": meta.get("target"), "unit": meta.get("unit"), "n_train": meta.get("n_train"),
             "val_mae": metrics.get("val_mae"), "size_bytes": size_bytes}
    if meta["kind"] == "delta":
        entry.update(elements=meta.get("elements"), method=meta.get("method"),
                     moved_fraction=(meta.get("path_weights_updated") or {}).get("fraction"),
                     valid_errors={key: metrics[f"valid_{key}"] for key in ("energy_mae", "forces_mae", "stress_mae")
                                   if f"valid_{key}" in metrics})
    return entry
