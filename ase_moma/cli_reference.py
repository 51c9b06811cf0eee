"""docs/cli.md, rendered from the argument parsers themselves so that the reference cannot drift.

    python -m ase_moma.cli_reference > docs/cli.md

``tests/test_cli_reference.py`` checks that the committed file is what this prints.
"""

from __future__ import annotations

import argparse
from typing import Iterator

from ase_moma.errors import EXIT_REFUSED, EXIT_USAGE

WIDTH = 100  # columns of the rendered help, fixed so the file does not depend on the terminal

HEADER = f"""# `ase-moma` command reference

Rendered from the argument parsers by `python -m ase_moma.cli_reference > docs/cli.md`; a test
checks that this file matches them. `ase-moma COMMAND --help` prints the same text.

Exit status: 0 on success; {EXIT_REFUSED} for input the command refuses, with one line saying why (a
missing file, bad input, an existing output without `--overwrite`); {EXIT_USAGE} for a command line that
cannot work (a missing or conflicting flag).
"""


def _verbs(parser: argparse.ArgumentParser, prefix: str) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """(full command, parser) for ``parser`` and every sub-command below it, depth first."""
    yield prefix, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _verbs(sub, f"{prefix} {name}")


def render(parser: argparse.ArgumentParser) -> str:
    """The whole reference for ``parser`` (the ``ase-moma`` parser) as Markdown."""
    parts = [HEADER]
    for command, sub in _verbs(parser, parser.prog):
        sub.formatter_class = lambda prog: argparse.HelpFormatter(prog, width=WIDTH, max_help_position=32)
        parts.append(f"## `{command}`\n\n```\n{sub.format_help().rstrip()}\n```\n")
    return "\n".join(parts)


def main() -> None:
    from ase_moma.cli import _parser

    print(render(_parser()), end="")


if __name__ == "__main__":
    main()
