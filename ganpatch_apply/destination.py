"""Where a tree goes: the default and `--dest`, resolved and checked; names of sibling folders."""
from __future__ import annotations

import datetime
import os
from pathlib import Path

from .errors import GanpatchError
from .inputs import Project


def default_dest(project: Project, target: str, dest: Path | None, many: bool) -> Path:
    if dest is None:
        return project.build_dir / target
    return dest / target if many else dest


def resolve_dest(project: Project, dest: Path) -> Path:
    """The real folder a destination names (`.`, `x/..` and symbolic links resolved), checked.

    A link to a folder builds in that folder (the link stays); a dangling link, a file, the
    ganpatch checkout itself or a folder above it are refused.
    """
    if dest.is_symlink() and not dest.exists():
        raise GanpatchError(f'destination {dest} is a symbolic link to {os.readlink(dest)}, which does not exist',
                            'create the folder it points to, or remove the link, or give another --dest')
    real = dest.resolve()
    if real.exists() and not real.is_dir():
        raise GanpatchError(f'destination {dest} is not a folder', 'give a folder (missing, empty, or a built tree)')
    root = project.root.resolve()
    if real == root or root.is_relative_to(real):
        raise GanpatchError(f'destination {dest} is the ganpatch checkout {root} or a folder above it',
                            'give a folder of its own, for example build/<target> (the default)')
    for owned in (project.patches_dir, project.overlays_dir):
        if real.is_relative_to(owned.resolve()):
            raise GanpatchError(f'destination {dest} lies inside {project.relative(owned)}/',
                                'give a folder of its own, for example build/<target> (the default)')
    return real


def unique_sibling(dest: Path, label: str) -> Path:
    """`<dest>.<label>-<UTC time>` (with a counter if taken): backups, files moved aside, conflict trees."""
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime('%Y%m%dT%H%M%SZ')
    candidate, number = dest.with_name(f'{dest.name}.{label}-{stamp}'), 1
    while os.path.lexists(candidate):
        number += 1
        candidate = dest.with_name(f'{dest.name}.{label}-{stamp}-{number}')
    return candidate


def display(path: Path) -> str:
    """A path relative to the current folder when it lies below it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve())) or '.'
    except (ValueError, OSError):
        return str(path)
