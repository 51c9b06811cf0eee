"""The backbone registry: names in the entry-point group ``ase_moma.backbones`` → Backbone classes.

Each entry point names a :class:`~ase_moma.backbone.Backbone` subclass
(``name = module:Class``). ase-moma registers its own plugins there; any other
installed distribution may add backbones to the same group. Loading lives in
:mod:`ase_moma.loading`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

from ase_moma.backbone import Backbone
from ase_moma.capabilities import Capabilities

GROUP = "ase_moma.backbones"


@dataclass(frozen=True)
class BackboneInfo:
    """One registry row.

    reason: why the backbone cannot be used here (None when it can);
    embedded: whether default weights ship with it (else a local checkpoint is
    needed; named downloads need a network); capabilities: what the family
    declares (None when its plugin failed to import).
    """

    name: str
    distribution: str
    target: str
    reason: str | None
    embedded: bool
    capabilities: Capabilities | None

    @property
    def usable(self) -> bool:
        return self.reason is None


def _entry_points() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def list_backbones() -> list[BackboneInfo]:
    """Every registered backbone, with its capabilities and whether it can load here (and why not)."""
    rows = []
    for name, ep in sorted(_entry_points().items()):
        distribution = ep.dist.name if ep.dist is not None else "?"
        try:
            cls = _backbone_class(ep)
            reason, embedded, capabilities = cls.unavailable_reason(), cls.has_default, cls.capabilities
        except Exception as error:  # a broken third-party plugin must not break the listing
            reason, embedded, capabilities = f"plugin failed to import: {error}", False, None
        rows.append(BackboneInfo(name, distribution, ep.value, reason, embedded, capabilities))
    return rows


def backbone_class(name: str) -> type[Backbone]:
    """The Backbone subclass registered as ``name``; ValueError listing known names."""
    known = _entry_points()
    if name not in known:
        listed = ", ".join(sorted(known)) or "none"
        path = Path(name).expanduser()
        if path.is_dir():
            raise ValueError(f"{name} is a folder, but not one ase-moma wrote (a composition, a fine-tuned "
                             f"potential or a hub module); registered backbones: {listed}")
        if any(sep in name for sep in ("/", os.sep)) or name.startswith((".", "~")) or path.exists():
            raise FileNotFoundError(f"{name}: no such folder (a saved model's folder, or one of the registered "
                                    f"backbones: {listed})")
        raise ValueError(f"unknown backbone {name!r}; registered backbones: {listed}")
    return _backbone_class(known[name])


def _backbone_class(ep: EntryPoint) -> type[Backbone]:
    cls = ep.load()
    if not (isinstance(cls, type) and issubclass(cls, Backbone)):
        raise TypeError(f"entry point {ep.name} = {ep.value} is not an ase_moma Backbone subclass")
    return cls
