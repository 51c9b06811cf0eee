"""Fine-tuning methods, one class each, found by name in the entry-point group ``ase_moma.finetune_methods``.

ase-moma registers its own (``zero_shot``, ``readout``, ``full``, ``lora``, ``sparse``) in its package
metadata; another distribution adds a method with one class (a
:class:`~ase_moma.finetune.methods.base.FinetuneMethod` subclass) and one line in its own metadata::

    [options.entry_points]
    ase_moma.finetune_methods =
        my_method = my_package.module:MyMethod

after which ``ase-moma finetune --method my_method`` trains with it.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points

from ase_moma.finetune.methods.base import FinetuneMethod, MethodOptions, StartContext, Trainable

GROUP = "ase_moma.finetune_methods"

__all__ = ["GROUP", "FinetuneMethod", "MethodOptions", "StartContext", "Trainable", "method_class", "method_names",
           "method_options"]


def _entry_points() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def method_names() -> list[str]:
    """The registered methods' names, sorted."""
    return sorted(_entry_points())


def method_class(name: str) -> type[FinetuneMethod]:
    """The FinetuneMethod subclass registered as ``name``; ValueError listing the known names."""
    known = _entry_points()
    if name not in known:
        raise ValueError(f"unknown fine-tuning method {name!r}; choose one of {', '.join(known) or 'none'}")
    cls = known[name].load()
    if not (isinstance(cls, type) and issubclass(cls, FinetuneMethod)):
        raise TypeError(f"the fine-tuning method {name!r} ({known[name].value}) is not a FinetuneMethod subclass")
    return cls


def method_options(name: str, **settings) -> MethodOptions:
    """The options of method ``name`` with ``settings`` (fields of its options class) set."""
    return method_class(name).Options(**settings)
