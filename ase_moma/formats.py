"""Saved formats and their versions: what a record on disk is, and how an older one is read.

Every JSON record ase-moma writes names its format and version under ``"schema"`` (``ase-moma/finetune-2``,
``ase-moma.module/2``, ``ase-moma.composition/1``, ``ase-moma.hub/2``). Reading a record that an older
release wrote migrates it, one version at a time, to the current version; the migrated record says which
version it was read from (``"migrated_from"``). Tensors saved beside a record are migrated as they are loaded (:meth:`Format.load`),
by the steps that change them. Files on disk are never rewritten by reading: a hub may be shared and
read-only, and the checksums the records keep stay true. A record written by a newer release is refused with a
one-line error naming both versions.

Each format is defined beside the code that reads it (:data:`ase_moma.module_format.MODULE_FORMAT`,
:data:`ase_moma.finetune.tuned_folder.FINETUNE_FORMAT`, :data:`ase_moma.compose.recipe.RECIPE_FORMAT`,
:data:`ase_moma.hub.store.HUB_FORMAT`); the
fixtures in tests/fixtures hold the files each release wrote, and the tests load them with today's code.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from ase_moma.errors import HubIntegrityError

RecordStep = Callable[[dict[str, Any]], dict[str, Any]]
"""One version's change to a record: the record at version v in, the record at v + 1 out (a copy may be
changed in place: the caller passes its own)."""
TensorStep = Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]
"""One version's change to the tensors of one file beside the record."""
MIGRATED_FROM = "migrated_from"


def _unchanged(record: dict[str, Any]) -> dict[str, Any]:
    return record


@dataclass(frozen=True)
class Migration:
    """From one version to the next: what changed (``note``, for the reader of this code and of the
    record), how the record changes, and how the tensors of each named file change."""

    note: str
    record: RecordStep = _unchanged
    tensors: Mapping[str, TensorStep] = field(default_factory=dict)


@dataclass(frozen=True)
class Format:
    """A saved format: its ``name``, the ``separator`` between name and version in its tag (as first
    written: ``ase-moma/finetune-1``, ``ase-moma.composition/1``), what to call it in errors, and its
    ``migrations`` (``migrations[i]`` takes version i + 1 to i + 2, so the current version is one more than
    their number). unversioned: a record without ``"schema"`` is version 1 (files written before the format
    carried one), instead of an error."""

    name: str
    what: str
    separator: str = "/"
    migrations: tuple[Migration, ...] = ()
    unversioned: bool = False

    @property
    def version(self) -> int:
        """The version this ase-moma writes."""
        return len(self.migrations) + 1

    @property
    def tag(self) -> str:
        """What a record of the current version holds under ``"schema"``."""
        return self.tag_of(self.version)

    def tag_of(self, version: int) -> str:
        return f"{self.name}{self.separator}{version}"

    def version_of(self, record: Mapping[str, Any], path: Path | str) -> int:
        """The version ``record`` (read from ``path``) was written in; HubIntegrityError when it is not this format
        or is newer than this ase-moma reads."""
        schema = record.get("schema")
        if schema is None and self.unversioned:
            return 1
        found = re.fullmatch(re.escape(self.name + self.separator) + r"(\d+)", str(schema))
        if found is None:
            raise HubIntegrityError(f"{path} is not an ase-moma {self.what} (schema {schema!r})")
        version = int(found.group(1))
        if not 1 <= version <= self.version:
            raise HubIntegrityError(f"{path} is an ase-moma {self.what} of version {version}, written by a newer "
                              f"ase-moma; this one reads versions up to {self.version} ({self.tag}): upgrade "
                              "ase-moma to read it")
        return version

    def read(self, record: Mapping[str, Any], path: Path | str) -> dict[str, Any]:
        """``record`` migrated to the current version (a copy; the input is left as it is). A migrated record
        names the version it was read from under ``"migrated_from"``; a current one is returned as it is."""
        version = self.version_of(record, path)
        migrated = copy.deepcopy(dict(record))
        for step in self.migrations[version - 1:]:
            migrated = step.record(migrated)
        migrated["schema"] = self.tag
        if version < self.version:
            migrated[MIGRATED_FROM] = self.tag_of(version)
        return migrated

    def load(self, tensors: dict[str, torch.Tensor], file: str, record: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """``tensors`` of ``file`` (loaded as they are on disk) migrated as ``record`` (read by :meth:`read`)
        requires: the tensor steps from the version it was read from."""
        since = record.get(MIGRATED_FROM)
        if since is None:
            return tensors
        version = self.version_of({"schema": since}, file)
        for step in self.migrations[version - 1:]:
            if file in step.tensors:
                tensors = step.tensors[file](tensors)
        return tensors

    def current(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """``record`` to be written by this ase-moma: tagged with the current version, without the note of
        a migration (whatever is written now is in the current format)."""
        written = {key: value for key, value in record.items() if key != MIGRATED_FROM}
        written["schema"] = self.tag
        return written
