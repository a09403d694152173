"""Exit codes and errors: one line saying what went wrong, one saying what to do, and an exit code."""
from __future__ import annotations

import sys

EXIT_OK = 0
EXIT_ERROR = 1         # bad input, lock, git
EXIT_USAGE = 2         # argparse
EXIT_NO_SOURCE = 3     # no source holds the pinned tree
EXIT_REJECTED = 4      # a source whose tree id differs from the lock, or an unsafe/broken source
EXIT_PATCH = 5         # a patch does not apply, or --refresh could not prove its export
EXIT_LOCAL_WORK = 6    # the destination holds work an update would overwrite


class GanpatchError(Exception):
    """An error apply.py reports as `error: <message>`, optional detail lines, and `hint: <hint>`."""
    code = EXIT_ERROR

    def __init__(self, message: str, hint: str | None = None, details: list[str] | None = None):
        super().__init__(message)
        self.hint = hint
        self.details = details or []


class NoSourceError(GanpatchError):
    code = EXIT_NO_SOURCE


class RejectedError(GanpatchError):
    code = EXIT_REJECTED


class PatchError(GanpatchError):
    code = EXIT_PATCH


class LocalWorkError(GanpatchError):
    code = EXIT_LOCAL_WORK


def log(message: str) -> None:
    """Progress and notes go to stderr; reports (--list, --status, --diff, --refresh) to stdout."""
    print(message, file=sys.stderr, flush=True)


def plural(count: int, word: str, many: str | None = None) -> str:
    """`1 file`, `2 files` (or the given plural)."""
    return f'{count} {word if count == 1 else many or word + "s"}'


def report(exc: GanpatchError, target: str | None = None) -> None:
    prefix = f'{target}: ' if target else ''
    log(f'error: {prefix}{exc}')
    for line in exc.details:
        log(f'  {line}')
    if exc.hint:
        log(f'hint: {exc.hint}')
