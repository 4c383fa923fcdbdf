"""The one error the training code raises for bad input, and how each command reports it.

Library code raises (TrainingError, or a built-in such as FileNotFoundError) so that it can be
called from other code and tests; only a command's main() turns the error into one line on stderr
and exit code 1.
"""

from __future__ import annotations

import functools
import sys


class TrainingError(ValueError):
    """Input the training code cannot use: a missing source, an unknown setting, an empty split."""


def reports_errors(main):
    """Decorate a command's main(argv): TrainingError and OSError become one line and exit code 1."""

    @functools.wraps(main)
    def wrapper(argv: list[str] | None = None) -> int:
        try:
            return main(argv)
        except (TrainingError, OSError) as err:  # the user can act on these; anything else is a bug: traceback
            print(f"error: {err}", file=sys.stderr)
            return 1

    return wrapper
