"""Which modalities exist: the entry-point group ``ase_moma.modalities`` (``name = module:Class``).

ase-moma registers ``text``, ``composition`` and ``structure``; a package adds another view the way a backbone
plugin adds a backbone, with a :class:`~ase_moma.modalities.base.Modality` subclass and one line in its
entry points. ``graph`` is not in the group: it is the model's own pooled features, always present.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Iterable

from ase_moma.errors import AseMomaError, UsageError
from ase_moma.modalities.base import Modality

GROUP = "ase_moma.modalities"
GRAPH = "graph"


class EncoderMismatch(AseMomaError, ValueError):
    """An installed encoder is not the one a saved model was trained with, or is not installed."""


def modality_names() -> list[str]:
    """The registered modality names, sorted (``graph`` not among them)."""
    return sorted(ep.name for ep in entry_points(group=GROUP))


def parse_modalities(text: str | Iterable[str] | None) -> tuple[str, ...]:
    """The non-graph views named by ``"graph,text,composition"`` (or a list), sorted and checked.

    ``graph`` may be named or left out: it is always read. UsageError for a name not registered.
    """
    if text is None:
        return ()
    names = [part.strip() for part in (text.split(",") if isinstance(text, str) else text) if part.strip()]
    known = modality_names()
    unknown = [name for name in names if name != GRAPH and name not in known]
    if unknown:
        raise UsageError(f"unknown modality {unknown[0]!r}; choose from {', '.join([GRAPH, *known])}")
    return tuple(sorted({name for name in names if name != GRAPH}))


def build_modality(name: str) -> Modality:
    """An instance of the registered modality ``name`` with its defaults (the text cache in the user's
    cache folder). EncoderMismatch saying what to install when its package is missing."""
    found = [ep for ep in entry_points(group=GROUP) if ep.name == name]
    if not found:
        raise UsageError(f"unknown modality {name!r}; choose from {', '.join([GRAPH, *modality_names()])}")
    try:
        cls = found[0].load()
        return cls()
    except ImportError as error:
        raise EncoderMismatch(f"the {name} modality needs a package that is not installed ({error.name}); "
                              "install it with: pip install 'ase-moma[fusion]'") from None
