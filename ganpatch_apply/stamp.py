"""The stamp, `.git/ganpatch-stamp.json`: what a tree was built from and the commit it was built at.

    format     2 (trees built before the in-place update model have 1; both are read)
    target     the target's name
    upstream, patches, overlays   `Inputs.digest()` of the build
    head       the commit the build made (branch `main`)
    refreshed  after --refresh: the digest of what was exported and the HEAD it was exported from
    authors    with --with-authors: the lock's authors entry and the commit of branch `authors`
    state      `conflict` for a --3way conflict tree
"""
from __future__ import annotations

import json
import os
from pathlib import Path

STAMP_NAME = 'ganpatch-stamp.json'
STAMP_FORMAT = 2
READABLE_FORMATS = (1, 2)


def stamp_path(git_dir: Path) -> Path:
    return git_dir / STAMP_NAME


def read_stamp(git_dir: Path) -> dict | None:
    stamp = read_json(stamp_path(git_dir))
    return stamp if stamp is not None and stamp.get('format') in READABLE_FORMATS else None


def read_json(path: Path) -> dict | None:
    """A JSON object, or None when the file is missing, unreadable or not one."""
    try:
        data = json.loads(path.read_text(encoding='utf-8'))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_json(path: Path, data: dict) -> None:
    """Written under a temporary name and renamed: a reader sees the old or the new file, never half of one."""
    temporary = path.with_name(path.name + '.tmp')
    temporary.write_text(json.dumps(data, indent=1, sort_keys=True) + '\n', encoding='utf-8')
    os.replace(temporary, path)


def write_stamp(git_dir: Path, stamp: dict) -> None:
    write_json(stamp_path(git_dir), {**stamp, 'format': STAMP_FORMAT})


def built_inputs(stamp: dict) -> dict:
    return {key: stamp.get(key) for key in ('upstream', 'patches', 'overlays')}
