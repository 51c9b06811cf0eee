"""docs/cli.md stays in step with the parsers: every verb has its section, every flag is in it."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from ase_moma.cli import _parser
from ase_moma.cli_reference import _verbs

REFERENCE = Path(__file__).resolve().parents[1] / "docs" / "cli.md"


def _sections() -> dict[str, str]:
    text = REFERENCE.read_text()
    return {match.group(1): body for match, body in zip(re.finditer(r"^## `([^`]+)`$", text, re.M),
                                                        re.split(r"^## `[^`]+`$", text, flags=re.M)[1:])}


def test_every_verb_and_flag_is_in_the_reference():
    sections = _sections()
    verbs = dict(_verbs(_parser(), "ase-moma"))
    assert set(sections) == set(verbs), "regenerate: python -m ase_moma.cli_reference > docs/cli.md"
    for command, parser in verbs.items():
        for action in parser._actions:
            if action.help == argparse.SUPPRESS:
                continue
            for flag in action.option_strings:
                assert re.search(rf"(^|[\s,\[]){re.escape(flag)}\b", sections[command]), (command, flag)
            if action.help and not isinstance(action, argparse._SubParsersAction):
                first = " ".join(action.help.split()[:4])  # wrapped lines: compare the first words
                assert first in " ".join(sections[command].split()), (command, first)


def test_the_documented_exit_statuses_are_what_the_commands_return(tmp_path, capsys):
    from ase_moma.cli import main
    from ase_moma.errors import EXIT_REFUSED, EXIT_USAGE

    text = " ".join(REFERENCE.read_text().split())
    assert f"{EXIT_REFUSED} for input the command refuses" in text
    assert f"{EXIT_USAGE} for a command line that cannot work" in text
    assert main(["hub", "list", str(tmp_path / "no_such_hub")]) == EXIT_REFUSED
    assert main(["finetune", "--backbone", "sevennet"]) == EXIT_USAGE
    assert "needs --train" in capsys.readouterr().err
