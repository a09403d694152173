"""upstream.lock: what every target is built from, pinned to a commit and its git tree id.

One TOML table per target:

    [stylegan3]
    repo = "https://github.com/NVlabs/stylegan3"   # where the commit lives
    commit = "<40 hex>"                             # the upstream commit
    tree = "<40 hex>"                               # `git rev-parse <commit>^{tree}`: verified on every read
    license = "..."
    status = "usable"                               # shown by --list (optional)
    aliases = ["..."]                               # other names for --target (optional)

    [stylegan3.authors]                             # the original authors' code (optional), pinned the same way
    repo, commit, tree, license = ...
    patch = "clipped_stylegan3.patch"               # a diff in their tree, applied to the upstream, or
    files = ["training/loss.py"]                    # files of their tree that replace the upstream's
"""
from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path

from .errors import GanpatchError

_HEX40 = re.compile(r'[0-9a-f]{40}')
_GITHUB_REPO = re.compile(r'https://github\.com/[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+')
_TARGET_NAME = re.compile(r'[A-Za-z0-9][A-Za-z0-9_.-]*')
_TARGET_KEYS = {'repo', 'commit', 'tree', 'license', 'status', 'aliases', 'authors'}
_AUTHORS_KEYS = {'repo', 'commit', 'tree', 'license', 'patch', 'files'}


@dataclasses.dataclass(frozen=True)
class Source:
    """A pinned git tree: an upstream, or the original authors' code."""
    label: str  # how messages name it: `stylegan3`, `stylegan3 authors' code`
    repo: str
    commit: str
    tree: str
    license: str

    @property
    def slug(self) -> str:
        """`owner/name` of the GitHub repository."""
        return self.repo.removeprefix('https://github.com/').removesuffix('.git')

    @property
    def owner(self) -> str:
        return self.slug.split('/')[0]

    @property
    def name(self) -> str:
        return self.slug.split('/')[1]

    def as_dict(self) -> dict:
        return {'repo': self.repo, 'commit': self.commit, 'tree': self.tree, 'license': self.license}


@dataclasses.dataclass(frozen=True)
class Authors:
    """The original authors' change to a target's upstream: a diff in their tree, or files of it."""
    source: Source
    patch: str | None = None
    files: tuple[str, ...] = ()

    def as_dict(self) -> dict:
        change = {'patch': self.patch} if self.patch else {'files': list(self.files)}
        return {**self.source.as_dict(), **change}

    def describe(self) -> str:
        if self.patch:
            return f'{self.patch} of {self.source.slug}@{self.source.commit[:7]} applied to the upstream'
        return f'{", ".join(self.files)} taken from {self.source.slug}@{self.source.commit[:7]}'


@dataclasses.dataclass(frozen=True)
class Pin:
    """One target of upstream.lock."""
    target: str
    upstream: Source
    aliases: tuple[str, ...] = ()
    status: str = ''
    authors: Authors | None = None


def load_lock(path: Path) -> dict[str, Pin]:
    """Reads and validates upstream.lock; returns the pins by target name, in file order."""
    hint = f'fix {path.name} (TOML: one table per target with repo, commit, tree, license)'
    try:
        tables = tomllib.loads(path.read_text(encoding='utf-8'))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise GanpatchError(f'cannot read {path}: {exc}', hint) from exc
    pins = {target: _read_target(path.name, target, table, hint) for target, table in tables.items()}
    if not pins:
        raise GanpatchError(f'{path.name} pins no target', hint)
    _check_names(path.name, pins, hint)
    return pins


def _read_target(lock_name: str, target: str, table, hint: str) -> Pin:
    where = f'{lock_name}: [{target}]'
    if not isinstance(table, dict):
        raise GanpatchError(f'{where} is not a table', hint)
    if not _TARGET_NAME.fullmatch(target):
        raise GanpatchError(f'{where}: a target name is letters, digits, `.`, `_` and `-`', hint)
    if unknown := sorted(set(table) - _TARGET_KEYS):
        raise GanpatchError(f'{where} has unknown keys: {", ".join(unknown)}', hint)
    upstream = _read_source(where, target, table, hint)
    aliases = table.get('aliases', [])
    if not isinstance(aliases, list) or not all(isinstance(alias, str) and alias for alias in aliases):
        raise GanpatchError(f'{where} aliases must be a list of names', hint)
    status = table.get('status', '')
    if not isinstance(status, str):
        raise GanpatchError(f'{where} status must be a string', hint)
    authors = table.get('authors')
    if authors is not None:
        authors = _read_authors(f'{lock_name}: [{target}.authors]', target, authors, hint)
    return Pin(target, upstream, tuple(aliases), status, authors)


def _read_source(where: str, label: str, table: dict, hint: str) -> Source:
    missing = [key for key in ('repo', 'commit', 'tree', 'license') if not isinstance(table.get(key), str)]
    if missing:
        raise GanpatchError(f'{where} lacks {", ".join(missing)}', hint)
    if not _GITHUB_REPO.fullmatch(table['repo']):
        raise GanpatchError(f'{where} repo {table["repo"]!r} is not https://github.com/OWNER/NAME', hint)
    for key in ('commit', 'tree'):
        if not _HEX40.fullmatch(table[key]):
            raise GanpatchError(f'{where} {key} must be 40 lowercase hex digits, not {table[key]!r}', hint)
    return Source(label, table['repo'], table['commit'], table['tree'], table['license'])


def _read_authors(where: str, target: str, table, hint: str) -> Authors:
    if not isinstance(table, dict):
        raise GanpatchError(f'{where} is not a table', hint)
    if unknown := sorted(set(table) - _AUTHORS_KEYS):
        raise GanpatchError(f'{where} has unknown keys: {", ".join(unknown)}', hint)
    source = _read_source(where, f"{target} authors' code", table, hint)
    patch, files = table.get('patch'), table.get('files')
    if (patch is None) == (files is None):
        raise GanpatchError(f'{where} needs exactly one of patch (a diff in their tree) or files (a list)', hint)
    paths = [patch] if patch is not None else files
    if not isinstance(paths, list) or not paths or not all(isinstance(p, str) and _relative_path(p) for p in paths):
        raise GanpatchError(f'{where} {"patch" if patch is not None else "files"} must name relative paths '
                            'without `..`', hint)
    return Authors(source, patch, tuple(files or ()))


def _relative_path(path: str) -> bool:
    parts = path.split('/')
    return not path.startswith('/') and all(part not in ('', '.', '..') for part in parts)


def _check_names(lock_name: str, pins: dict[str, Pin], hint: str) -> None:
    """Every target name and alias names one target, case-insensitively; `all` is reserved."""
    owner: dict[str, str] = {}
    for pin in pins.values():
        for name in (pin.target, *pin.aliases):
            key = name.casefold()
            if key == 'all':
                raise GanpatchError(f'{lock_name}: [{pin.target}] uses the reserved name {name!r}', hint)
            if owner.get(key, pin.target) != pin.target:
                other = owner[key]
                what = 'the target' if key == other.casefold() else 'an alias of'
                raise GanpatchError(f'{lock_name}: [{pin.target}] name {name!r} is already {what} {other!r}',
                                    hint + '; every name and alias must name one target')
            owner[key] = pin.target


def resolve_targets(name: str, pins: dict[str, Pin]) -> list[Pin]:
    """`all`, a target name or an alias, case-insensitively."""
    wanted = name.casefold()
    if wanted == 'all':
        return list(pins.values())
    for pin in pins.values():
        if wanted in (n.casefold() for n in (pin.target, *pin.aliases)):
            return [pin]
    raise GanpatchError(f'unknown target {name!r}', f'valid targets: {", ".join(pins)} (or all)')
