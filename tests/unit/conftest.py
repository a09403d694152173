"""Small upstreams and ganpatch projects built inside the tests (no network, no real upstream).

`demo_upstream` is a git repository with nested folders, an executable, a symlink and a binary file.
`demo_project` is a copy of apply.py with its own upstream.lock (target `demo`, alias `Demo-Alias`)
pinning that repository, a two-patch series and overlays; `demo_project.run(...)` runs apply.py on it.
"""
import importlib.util
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXED_DATE = '946684800 +0000'
GIT_ENV = {
    'GIT_AUTHOR_NAME': 'Upstream Author', 'GIT_AUTHOR_EMAIL': 'author@example.com', 'GIT_AUTHOR_DATE': FIXED_DATE,
    'GIT_COMMITTER_NAME': 'Upstream Author', 'GIT_COMMITTER_EMAIL': 'author@example.com',
    'GIT_COMMITTER_DATE': FIXED_DATE, 'GIT_CONFIG_GLOBAL': os.devnull, 'GIT_CONFIG_NOSYSTEM': '1',
}
BINARY = bytes(range(256)) * 4


def git(*args, cwd, input=None) -> str:
    result = subprocess.run(['git', *args], cwd=cwd, input=input, capture_output=True,
                            env={**os.environ, **GIT_ENV}, check=True)
    return result.stdout.decode().strip()


def write(path: Path, text: str | bytes, executable: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    path.chmod(0o755 if executable else 0o644)
    return path


def load_module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='session')
def apply_module():
    """The repository's apply.py, imported for its functions."""
    return load_module(REPO_ROOT / 'apply.py', 'ganpatch_apply')


@pytest.fixture(scope='session')
def run_git():
    """`run_git(*args, cwd=...)`: git with a fixed identity and date and no user configuration."""
    return git


@dataclass
class Upstream:
    path: Path
    commit: str
    tree: str


@pytest.fixture(scope='session')
def demo_upstream(tmp_path_factory) -> Upstream:
    path = tmp_path_factory.mktemp('upstream') / 'demo'
    write(path / 'README.md', 'Demo upstream.\n\nUsage: run tool.sh\n')
    write(path / 'pkg' / '__init__.py', '')
    write(path / 'pkg' / 'mod.py', ''.join(f'def f{i}():\n    return {i}\n\n' for i in range(12)))
    write(path / 'pkg' / 'sub' / 'deep.py', 'VALUE = 1\n')
    write(path / 'pkg-extra.txt', 'sorts before pkg/ in a git tree\n')
    write(path / 'tool.sh', '#!/bin/sh\necho tool\n', executable=True)
    write(path / 'data.bin', BINARY)
    (path / 'link.py').symlink_to('pkg/mod.py')
    git('init', '-q', '--initial-branch=master', cwd=path)
    git('add', '-A', cwd=path)
    git('commit', '-q', '-m', 'initial upstream', cwd=path)
    return Upstream(path, git('rev-parse', 'HEAD', cwd=path), git('rev-parse', 'HEAD^{tree}', cwd=path))


def make_patches(upstream: Upstream, out: Path, edits: list[tuple[str, str, str]], base_edits=(), start=1) -> list[str]:
    """format-patch files for `edits` = [(path, old text, new text) → one commit each].

    They are made on the upstream plus `base_edits` (committed first, not exported), numbered from `start`.
    """
    out.mkdir(parents=True, exist_ok=True)
    work = out.parent / f'{out.name}-work'
    git('clone', '-q', str(upstream.path), str(work), cwd=out.parent)
    git('checkout', '-q', upstream.commit, cwd=work)
    for number, (path, old, new) in enumerate([*base_edits, *edits]):
        if number == len(base_edits):
            base = git('rev-parse', 'HEAD', cwd=work)
        target = work / path
        target.write_text(target.read_text().replace(old, new, 1))
        git('commit', '-q', '-am', f'{path}: change {old.strip()!r}\n\nWhy: a test patch (ours).', cwd=work)
    names = git('format-patch', '--zero-commit', '--no-signature', f'--start-number={start}', '-o', str(out),
                f'{base}..HEAD', cwd=work)
    shutil.rmtree(work)
    return [Path(name).name for name in names.splitlines()]


PATCH_EDITS = [('pkg/mod.py', 'return 3\n', 'return 30\n'), ('README.md', 'run tool.sh', 'run ./tool.sh')]


@pytest.fixture(scope='session')
def patch_factory():
    """`make_patches` (see there); `patch_factory.edits` are the edits of the demo series."""
    make_patches.edits = PATCH_EDITS
    return make_patches


@dataclass
class Project:
    root: Path
    cache: Path
    upstream: Upstream

    def run(self, *args, env=None, check_rc=None) -> subprocess.CompletedProcess:
        full_env = {key: value for key, value in os.environ.items() if not key.startswith('GANPATCH_')}
        full_env.update(GANPATCH_CACHE=str(self.cache), **(env or {}))
        result = subprocess.run([sys.executable, str(self.root / 'apply.py'), *map(str, args)], cwd=self.root,
                                capture_output=True, text=True, env=full_env)
        if check_rc is not None:
            assert result.returncode == check_rc, result.stderr + result.stdout
        return result

    def build(self, dest: Path, *args) -> Path:
        self.run('--target', 'demo', '--dest', dest, '--source', self.upstream.path, *args, check_rc=0)
        return dest

    def load_module(self):
        """The project's apply.py imported in-process (for monkeypatching)."""
        return load_module(self.root / 'apply.py', f'ganpatch_apply_{id(self)}')

    def snapshot(self) -> dict[str, bytes]:
        """Every byte under patches/ and overlays/."""
        return {str(path.relative_to(self.root)): path.read_bytes()
                for base in ('patches', 'overlays') for path in sorted((self.root / base).rglob('*')) if path.is_file()}


def lock_text(upstream: Upstream) -> str:
    return (f'[demo]\nrepo = "https://github.com/test/demo"\ncommit = "{upstream.commit}"\n'
            f'tree = "{upstream.tree}"\nlicense = "MIT"\naliases = ["Demo-Alias"]\n')


@pytest.fixture
def demo_project(tmp_path, demo_upstream) -> Project:
    upstream = demo_upstream
    root = tmp_path / 'project'
    root.mkdir()
    shutil.copy(REPO_ROOT / 'apply.py', root / 'apply.py')
    (root / 'upstream.lock').write_text(lock_text(upstream))
    names = make_patches(upstream, root / 'patches' / 'demo', PATCH_EDITS)
    (root / 'patches' / 'demo' / 'series').write_text('# Patch series for demo.\n' + ''.join(f'{n}\n' for n in names))
    write(root / 'overlays' / 'common' / 'ganpatch' / '__init__.py', '"""ganpatch overlay."""\n')
    write(root / 'overlays' / 'demo' / 'run_demo.sh', '#!/bin/sh\npython -c "import ganpatch"\n', executable=True)
    return Project(root, tmp_path / 'cache', upstream)
