"""The errors ase-moma raises on purpose, and how the command line reports them.

An :class:`AseMomaError` (or a plain ``ValueError``, or a missing or existing file) is an expected
failure: bad input, a refused file, an output that exists. The CLI prints it as one line and exits 1.
A :class:`UsageError` is a command line that cannot work (a missing or conflicting flag): exit 2, as
argparse's own. Anything else is a bug, and the CLI lets its traceback through.
"""

from __future__ import annotations


class AseMomaError(Exception):
    """Base of the errors ase-moma raises for input it refuses."""


class HubIntegrityError(AseMomaError, ValueError):
    """A saved file failed a check (checksum, stray file, fingerprint, format or version)."""


class UsageError(AseMomaError, ValueError):
    """A command line that cannot work: a flag missing, or two that exclude each other."""


EXIT_REFUSED = 1
"""The CLI's exit status for refused input (an expected failure, one line on stderr)."""
EXIT_USAGE = 2
"""The CLI's exit status for a command line that cannot work (argparse's own status)."""

EXPECTED = (AseMomaError, ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError,
            PermissionError)
"""What the CLI reports as one line (exit 1) rather than as a bug."""
