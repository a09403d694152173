"""The update journal, `.git/ganpatch-update.json`: written right before an update changes the tree,
removed once the stamp says the update is done.

It holds everything needed to finish the update (the commit the work tree is moving from and to,
the refs to set, the new stamp), so a run killed at any point after it is written is finished by
the next run, and `--status` reports it as interrupted in the meantime.
"""
from __future__ import annotations

from pathlib import Path

from .stamp import read_json, write_json

JOURNAL_NAME = 'ganpatch-update.json'


def journal_path(git_dir: Path) -> Path:
    return git_dir / JOURNAL_NAME


def read_journal(git_dir: Path) -> dict | None:
    journal = read_json(journal_path(git_dir))
    return journal if journal is not None and 'to' in journal else None


def write_journal(git_dir: Path, journal: dict) -> None:
    write_json(journal_path(git_dir), journal)


def remove_journal(git_dir: Path) -> None:
    journal_path(git_dir).unlink(missing_ok=True)
