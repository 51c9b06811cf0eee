"""The flags several verbs share, each defined once: one spelling, one meaning, one help text.

``shared_flags("device", "dtype", ...)`` is an argparse parent parser carrying those flags; a verb passes
it as ``parents=[...]``. ``-o/--output`` differs only in what is written and whether it is required, so
:func:`output_flag` takes both.
"""

from __future__ import annotations

import argparse
from typing import Callable

FLAGS: dict[str, Callable[[argparse.ArgumentParser], None]] = {
    "device": lambda p: p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                                       help="where the model runs (default: cuda when available)"),
    "dtype": lambda p: p.add_argument("--dtype", default="float32", choices=["float32", "float64"],
                                      help="the model's floating-point precision (default float32)"),
    "overwrite": lambda p: p.add_argument("--overwrite", action="store_true",
                                          help="replace an existing output (it is written whole or not at all)"),
    "trust_pickle": lambda p: p.add_argument("--trust-pickle", action="store_true",
                                             help="allow a pickled checkpoint (a MACE .model, a Lightning .ckpt); "
                                                  "loading it runs code from the file"),
    "n_train": lambda p: p.add_argument("--n-train", "--max-train", dest="n_train", type=int, metavar="N",
                                        help="few-shot: subsample the training split to N structures (seeded)"),
}


def shared_flags(*names: str) -> argparse.ArgumentParser:
    """A parent parser with the flags ``names`` (keys of FLAGS), in that order."""
    parent = argparse.ArgumentParser(add_help=False)
    for name in names:
        FLAGS[name](parent)
    return parent


def output_flag(what: str, required: bool = True) -> argparse.ArgumentParser:
    """A parent parser with ``-o/--output``: ``what`` says what is written there."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("-o", "--output", required=required, help=what)
    return parent
