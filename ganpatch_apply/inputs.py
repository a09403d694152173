"""What a tree is built from, besides the upstream: this repository's patch series and overlays.

`Project` names the folders of a ganpatch checkout. `Inputs` is everything a build of one target
reads (the pin, the patch files in series order, the overlay files by their path in the tree); its
`digest()` is recorded in the tree's stamp and compared on every run to tell whether the tree is
up to date.
"""
from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

from .errors import GanpatchError
from .pins import Pin, load_lock

PACKAGE_DIR_IN_TREE = 'ganpatch'
SKIPPED_OVERLAY_NAMES = ('__pycache__', '.pytest_cache')
SKIPPED_OVERLAY_SUFFIXES = ('.pyc', '.pyo')


@dataclasses.dataclass(frozen=True)
class Project:
    """A ganpatch checkout: upstream.lock, patches/<target>/, overlays/common/ganpatch/, overlays/<target>/."""
    root: Path

    @property
    def lock_path(self) -> Path:
        return self.root / 'upstream.lock'

    @property
    def patches_dir(self) -> Path:
        return self.root / 'patches'

    @property
    def overlays_dir(self) -> Path:
        return self.root / 'overlays'

    @property
    def common_overlay_dir(self) -> Path:
        return self.overlays_dir / 'common' / PACKAGE_DIR_IN_TREE

    @property
    def build_dir(self) -> Path:
        return self.root / 'build'

    def load_lock(self) -> dict[str, Pin]:
        return load_lock(self.lock_path)

    def series_path(self, target: str) -> Path:
        return self.patches_dir / target / 'series'

    def relative(self, path: Path) -> str:
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return str(path)


def read_series(path: Path) -> list[str]:
    """Patch file names in order; blank lines and `#` comments are skipped."""
    if not path.is_file():
        return []
    names = [line.strip() for line in path.read_text(encoding='utf-8').splitlines()]
    return [name for name in names if name and not name.startswith('#')]


def is_skipped_overlay(relative: Path) -> bool:
    """Byte-code and caches are never overlays (nor are they copied back)."""
    return any(part in SKIPPED_OVERLAY_NAMES for part in relative.parts) or relative.suffix in SKIPPED_OVERLAY_SUFFIXES


def file_digest(path: Path) -> str:
    mode = '100755' if path.stat().st_mode & 0o100 else '100644'
    return f'{mode} sha256:{hashlib.sha256(path.read_bytes()).hexdigest()}'


@dataclasses.dataclass(frozen=True)
class Inputs:
    """The patch files (in order) and overlay files (tree path -> file) one build of `pin` reads."""
    pin: Pin
    patches: tuple[Path, ...]
    overlays: dict[str, Path]

    def digest(self) -> dict:
        """The lock entry and the hash of every patch and overlay file, as recorded in a stamp."""
        return {
            'upstream': self.pin.upstream.as_dict(),
            'patches': [[path.name, hashlib.sha256(path.read_bytes()).hexdigest()] for path in self.patches],
            'overlays': {tree_path: file_digest(path) for tree_path, path in self.overlays.items()},
        }


def read_inputs(project: Project, pin: Pin) -> Inputs:
    """The target's series (every listed file present) and overlays (plain files only)."""
    return Inputs(pin, tuple(series_patches(project, pin.target)), overlay_files(project, pin.target))


def series_patches(project: Project, target: str) -> list[Path]:
    patches = []
    for name in read_series(project.series_path(target)):
        path = project.patches_dir / target / name
        if '/' in name or not path.is_file():
            raise GanpatchError(f'{project.relative(project.series_path(target))} lists {name}, but '
                                f'patches/{target}/{name} is missing', 'restore the file or remove it from the series')
        patches.append(path)
    return patches


def overlay_files(project: Project, target: str) -> dict[str, Path]:
    """Tree path -> overlay file: overlays/common/ganpatch/ as ganpatch/, overlays/<target>/ at the root."""
    mapping: dict[str, Path] = {}
    for base, prefix in ((project.common_overlay_dir, PACKAGE_DIR_IN_TREE + '/'), (project.overlays_dir / target, '')):
        for path in sorted(base.rglob('*')) if base.is_dir() else []:
            relative = path.relative_to(base)
            if is_skipped_overlay(relative) or (path.is_dir() and not path.is_symlink()):
                continue
            if path.is_symlink() or not path.is_file():
                raise GanpatchError(f'overlay {path} is not a regular file', 'overlays hold plain files only')
            tree_path = prefix + relative.as_posix()
            if tree_path in mapping:
                raise GanpatchError(f'overlays/{target}/{tree_path} collides with overlays/common/ganpatch',
                                    'the ganpatch/ package comes from overlays/common only')
            mapping[tree_path] = path
    return mapping


def overlay_source(project: Project, target: str, tree_path: str) -> Path:
    """Where the overlay file shipped at `tree_path` lives in this repository."""
    if tree_path.startswith(PACKAGE_DIR_IN_TREE + '/'):
        return project.common_overlay_dir / tree_path.removeprefix(PACKAGE_DIR_IN_TREE + '/')
    return project.overlays_dir / target / tree_path
