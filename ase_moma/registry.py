"""The backbone registry: entry points in the group ``ase_moma.backbones``.

Each entry point names a :class:`~ase_moma.backbone.Backbone` subclass
(``name = module:Class``). ase-moma registers its own plugins there; any other
installed distribution may add backbones to the same group.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import torch

from ase_moma.backbone import Backbone
from ase_moma.devices import resolve_device, resolve_dtype

GROUP = "ase_moma.backbones"


@dataclass(frozen=True)
class BackboneInfo:
    """One registry row.

    reason: why the backbone cannot be used here (None when it can);
    embedded: whether default weights ship with it (else a local checkpoint is
    needed; named downloads need a network).
    """

    name: str
    distribution: str
    target: str
    reason: str | None
    embedded: bool

    @property
    def usable(self) -> bool:
        return self.reason is None


def _entry_points() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def list_backbones() -> list[BackboneInfo]:
    """Every registered backbone, with whether it can load its default here and why not."""
    rows = []
    for name, ep in sorted(_entry_points().items()):
        distribution = ep.dist.name if ep.dist is not None else "?"
        try:
            cls = _backbone_class(ep)
            reason, embedded = cls.unavailable_reason(), cls.has_default
        except Exception as error:  # a broken third-party plugin must not break the listing
            reason, embedded = f"plugin failed to import: {error}", False
        rows.append(BackboneInfo(name, distribution, ep.value, reason, embedded))
    return rows


def backbone_class(name: str) -> type[Backbone]:
    """The Backbone subclass registered as ``name``; ValueError listing known names."""
    known = _entry_points()
    if name not in known:
        raise ValueError(
            f"unknown backbone {name!r}; registered backbones: {', '.join(sorted(known)) or 'none'}"
        )
    return _backbone_class(known[name])


def load_backbone(name: str, source: str | None = None, *, device: str | torch.device = "auto",
                  dtype: str | torch.dtype = "float32", **options: Any) -> Backbone:
    """Load backbone ``name`` from ``source`` (None: the embedded default).

    A composed model (an ``ase-moma compose`` output folder) or a fine-tuned
    potential (an ``ase-moma finetune --backbone`` output folder) loads by
    passing its folder as ``name`` or as ``source``. options: plugin-specific
    loading options (e.g. ``trust_pickle`` for mace).
    """
    from ase_moma.compose.composed import is_composed, load_composed_backbone
    from ase_moma.finetune.export import is_tuned, load_tuned_backbone

    folder = next((path for path in (name, source) if is_composed(path) or is_tuned(path)), None)
    if folder is not None:
        loader = load_composed_backbone if is_composed(folder) else load_tuned_backbone
        backbone = loader(folder, device=device, dtype=dtype)
        if folder != name and backbone.name != name:
            raise ValueError(f"{source} holds a {backbone.name} model, not a {name} one")
        return backbone
    cls = backbone_class(name)
    backbone = cls.load(source, device=resolve_device(device), dtype=resolve_dtype(dtype), **options)
    backbone.requested_source = source
    return backbone


def _backbone_class(ep: EntryPoint) -> type[Backbone]:
    cls = ep.load()
    if not (isinstance(cls, type) and issubclass(cls, Backbone)):
        raise TypeError(f"entry point {ep.name} = {ep.value} is not an ase_moma Backbone subclass")
    return cls
