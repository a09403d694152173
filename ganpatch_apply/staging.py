"""Replacing files of patches/ and overlays/ all at once, safely against a kill (for --refresh).

The new files are written to `build/.refresh-<target>/` (never inside patches/ or overlays/, whose
files every build ships), then a journal listing every replacement and removal is written there;
that is the point of no return. The files are then moved into place and the folder removed. A run
killed before the journal leaves a folder that the next run deletes; one killed after it is
finished by the next run of apply.py on that target (the files were verified before the journal).

`inputs_lock` serialises this with builds: a refresh holds it exclusively, a build shared.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
from pathlib import Path

from . import locking
from .errors import log
from .inputs import Project
from .stamp import write_json, write_stamp

JOURNAL = 'journal.json'


@dataclasses.dataclass(frozen=True)
class Change:
    """A file of the repository (path relative to its root) and its new content; None removes it."""
    path: str
    data: bytes | None
    executable: bool = False


def staging_area(project: Project, target: str) -> Path:
    return project.build_dir / f'.refresh-{target}'


@contextlib.contextmanager
def inputs_lock(project: Project, target: str, *, exclusive: bool = False):
    """Holds the target's patches/ and overlays/ still (shared) or for writing (exclusive); an
    interrupted refresh of the target is finished first."""
    path = project.build_dir / f'.inputs-{target}.ganpatch-lock'
    if staging_area(project, target).exists():
        with locking.exclusive(path, f'patches/{target}'):
            finish_interrupted(project, target)
    with locking.exclusive(path, f'patches/{target}', shared=not exclusive):
        yield


def stage(project: Project, target: str, changes: list[Change]) -> dict[str, Path]:
    """Writes the new files into the staging area; returns repository path -> staged file."""
    area = staging_area(project, target)
    if area.exists():
        shutil.rmtree(area)
    area.mkdir(parents=True)
    staged = {}
    for change in changes:
        if change.data is None:
            continue
        path = area / 'files' / change.path  # the repository's layout, so file names stay what they will be
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(change.data)
        os.chmod(path, 0o755 if change.executable else 0o644)
        staged[change.path] = path
    return staged


def install(project: Project, target: str, changes: list[Change], staged: dict[str, Path],
            stamp: tuple[Path, dict] | None) -> None:
    """Commits the staged files: the journal, then every move, then the tree's stamp."""
    area = staging_area(project, target)
    operations = [[change.path, str(staged[change.path].relative_to(area)) if change.path in staged else None]
                  for change in changes]
    write_json(area / JOURNAL, {'operations': operations,
                                'stamp': [str(stamp[0]), stamp[1]] if stamp else None})
    roll_forward(project, area)


def roll_forward(project: Project, area: Path) -> None:
    journal = json.loads((area / JOURNAL).read_text(encoding='utf-8'))
    for path, staged in journal['operations']:
        destination = project.root / path
        if staged is None:
            destination.unlink(missing_ok=True)
            continue
        source = area / staged
        if not source.exists():
            continue  # moved already
        destination.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(source, destination)
        except OSError:  # another file system: a copy, then the staged file goes (repeated if killed)
            shutil.copy2(source, destination)
            source.unlink()
    if journal['stamp'] is not None:
        git_dir, stamp = Path(journal['stamp'][0]), journal['stamp'][1]
        if git_dir.is_dir():
            write_stamp(git_dir, stamp)
    shutil.rmtree(area)


def discard(project: Project, target: str) -> None:
    """Removes staged files that will not be installed (before the journal, nothing else was touched)."""
    shutil.rmtree(staging_area(project, target), ignore_errors=True)


def finish_interrupted(project: Project, target: str) -> None:
    area = staging_area(project, target)
    if not area.exists():
        return
    if (area / JOURNAL).is_file():
        log(f'{target}: finishing an interrupted --refresh (its files were verified before it was killed)')
        roll_forward(project, area)
    else:
        discard(project, target)  # killed before the point of no return: patches/ and overlays/ were not touched
