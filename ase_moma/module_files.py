"""Module folders on disk: JSON metadata, safetensors weights, checksums, nothing else.

A hub is shared between people who do not know each other, so a module folder
may hold only ``module.json`` and the safetensors files it lists with their
sha256. Anything else — a pickle above all, which runs code when loaded — is
refused before any file is read.
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

import torch

from ase_moma.errors import HubIntegrityError
from ase_moma.formats import Format
from ase_moma.module_format import MODULE_FORMAT
from ase_moma.version import CREATED_BY

MODULE_JSON = "module.json"
WEIGHTS = "weights.safetensors"
HEAD = "head.safetensors"
DELTA = "delta.safetensors"
# What a module changes, and the kind it merges as: every backbone weight (full), adapters after each
# interaction block (adapter), or a sparse change of the backbone weights (delta: a fine-tuned
# potential, which is a whole backbone state once added to the pretrained one).
MODULE_KINDS = {"full": "full", "adapter": "adapter", "delta": "full"}
TRAINED_KINDS = ("full", "adapter")  # what hub training and composition produce
PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin", ".model", ".tar", ".npy", ".joblib")


def check_module_kind(kind: Any, where: str) -> str:
    """``kind`` if it is one of MODULE_KINDS, else HubIntegrityError naming ``where``."""
    if kind not in MODULE_KINDS:
        raise HubIntegrityError(f"{where}: unknown module kind {kind!r} (known: {', '.join(MODULE_KINDS)})")
    return kind


def weights_file(meta: dict[str, Any]) -> str:
    """The file that holds a module's backbone or adapter weights: its identity for merging and caching."""
    return DELTA if meta.get("kind") == "delta" else WEIGHTS


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_json(path: Path, what: str) -> dict[str, Any]:
    """A JSON object from ``path``; HubIntegrityError naming the file if it is not one."""
    try:
        with open(path) as handle:
            content = json.load(handle)
    except FileNotFoundError:
        raise HubIntegrityError(f"{what} {path} is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise HubIntegrityError(f"{what} {path} is not valid JSON: {error}") from None
    if not isinstance(content, dict):
        raise HubIntegrityError(f"{what} {path} does not hold a JSON object")
    return content


def read_record(path: Path, form: Format) -> dict[str, Any]:
    """The record in ``path``, of format ``form``, migrated to its current version; HubIntegrityError naming
    the file when it is not one, or is of a newer version."""
    return form.read(read_json(path, form.what), path)


def read_folder_record(folder: str | Path, name: str, form: Format, kind: str) -> dict[str, Any]:
    """:func:`read_record` of the file ``name`` in ``folder``; FileNotFoundError saying that ``folder`` is not
    a ``kind`` when the file is absent."""
    path = Path(folder) / name
    if not path.is_file():
        raise FileNotFoundError(f"{folder} is not {kind}: it has no {name}")
    return read_record(path, form)


def write_json(path: Path, content: dict[str, Any]) -> None:
    with open(path, "w") as handle:
        json.dump(content, handle, indent=1, sort_keys=True)
        handle.write("\n")


def check_module_folder(folder: Path) -> dict[str, Any]:
    """Verify a module folder; return its ``module.json`` content, migrated to the current version
    (:data:`ase_moma.module_format.MODULE_FORMAT`).

    Checks, before reading any weights: no file other than ``module.json`` and
    the listed safetensors files (a pickle is named and refused); each listed
    file present with the recorded sha256. Raises HubIntegrityError naming the
    offending file.
    """
    if not folder.is_dir():
        raise HubIntegrityError(f"module folder {folder} does not exist")
    meta = read_json(folder / MODULE_JSON, "module metadata")
    MODULE_FORMAT.version_of(meta, folder / MODULE_JSON)  # a newer format is refused before anything else
    files = meta.get("files")
    if not isinstance(files, dict) or not files:
        raise HubIntegrityError(f"{folder / MODULE_JSON} lists no files with their sha256")
    for name in files:
        if Path(name).name != name or not name.endswith(".safetensors"):
            raise HubIntegrityError(
                f"{folder / MODULE_JSON} lists {name!r}; a module may only hold safetensors "
                "files in its own folder"
            )
    for path in sorted(folder.iterdir()):
        if path.name == MODULE_JSON or path.name in files:
            continue
        if path.suffix.lower() in PICKLE_SUFFIXES or _looks_pickled(path):
            raise HubIntegrityError(
                f"{path} looks like a pickle/torch file; hub modules hold only safetensors and "
                "JSON because loading a pickle can run arbitrary code. It was not read."
            )
        raise HubIntegrityError(f"{path} is not part of the module (module.json does not list it)")
    verify_files(folder, files, MODULE_JSON)
    return MODULE_FORMAT.read(meta, folder / MODULE_JSON)


def verify_files(folder: Path, files: Mapping[str, str | None], record: str) -> None:
    """Check that each ``folder/name`` exists with sha256 ``files[name]``, as ``record`` lists them.

    The one checksum check of every saved file (modules, compositions, fine-tuned
    potentials); HubIntegrityError naming the file that is missing or differs.
    """
    for name, expected in files.items():
        path = Path(folder) / name
        if not path.is_file():
            raise HubIntegrityError(f"{path} is listed in {record} but missing")
        actual = sha256_file(path)
        if actual != expected:
            raise HubIntegrityError(
                f"{path} is corrupted or was modified: sha256 {actual[:16]}… does not match "
                f"the one {record} records ({str(expected)[:16]}…)"
            )


def write_module_folder(folder: Path, meta: dict[str, Any], tensors: dict[str, dict[str, torch.Tensor]],
                        backbone: dict[str, Any]) -> None:
    """Fill an empty ``folder`` with the safetensors files and a ``module.json``.

    ``meta`` is completed with each file's sha256, the ``backbone`` record
    (name, version, source, fingerprint) and the creation time.
    """
    check_module_kind(meta.get("kind"), str(folder / MODULE_JSON))
    files = {filename: save_tensors(folder / filename, content) for filename, content in tensors.items()}
    record = MODULE_FORMAT.current(dict(meta, files=files, created_by=CREATED_BY,
                  backbone={k: backbone.get(k) for k in ("name", "version", "source", "fingerprint")},
                  created=datetime.now(timezone.utc).isoformat(timespec="seconds")))
    write_json(folder / MODULE_JSON, record)


def load_state(module: torch.nn.Module, tensors: dict[str, torch.Tensor], path: Path) -> None:
    """``module.load_state_dict(tensors)`` after checking names and shapes; errors name ``path``."""
    expected = module.state_dict()
    missing = sorted(expected.keys() - tensors.keys())
    unexpected = sorted(tensors.keys() - expected.keys())
    if missing or unexpected:
        raise HubIntegrityError(f"{path} does not fit the model: missing {missing[:3]}, "
                                f"unexpected {unexpected[:3]}")
    for key, value in tensors.items():
        if value.shape != expected[key].shape:
            raise HubIntegrityError(f"{path}: tensor {key} has shape {tuple(value.shape)}, "
                                    f"the model expects {tuple(expected[key].shape)}")
    module.load_state_dict({k: v.to(expected[k].dtype) for k, v in tensors.items()})


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Tensors from a safetensors file (checksum already verified by the caller)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except SafetensorError as error:
        raise HubIntegrityError(f"{path} is not a valid safetensors file: {error}") from None


def save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> str:
    """Write ``tensors`` (contiguous CPU copies) to ``path``; return the file's sha256."""
    from safetensors.torch import save_file

    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(path))
    return sha256_file(path)


def _looks_pickled(path: Path) -> bool:
    """A pickle starts with the PROTO opcode (0x80); a torch zip archive with 'PK'."""
    if not path.is_file():
        return False
    with open(path, "rb") as handle:
        head = handle.read(2)
    return head[:1] == b"\x80" or head == b"PK"
