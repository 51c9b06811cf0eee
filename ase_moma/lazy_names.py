"""Names a package exports but imports on first use (PEP 562's module ``__getattr__``).

The finetune, compose and hub packages export their training entry points by name, yet loading a saved
model must import no training code: each package maps a name to the module that defines it, and that
module is imported the first time the name is read.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any, Callable, Mapping


def imported_on_first_use(package: str, where: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package`` that returns ``name`` from the module ``where[name]``
    (absolute, or relative to ``package`` when it starts with a dot), imported then; AttributeError for
    any other name."""

    def __getattr__(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(import_module(where[name], package), name)

    return __getattr__
