"""Small upstreams and ganpatch projects built inside the tests (no network, no real upstream).

`demo_upstream` is a git repository with nested folders, an executable, a symlink and a binary file.
`demo_authors` is a repository standing for the original authors' code: a diff against the demo
upstream (`their.patch`) and a modified copy of one of its files (`pkg/sub/deep.py`).
`demo_project` is a copy of apply.py and ganpatch_apply/ with its own upstream.lock (target `demo`,
alias `Demo-Alias`, with the authors' patch) pinning those repositories, a two-patch series and
overlays; `demo_project.run(...)` runs apply.py on it.
"""
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

FIXED_DATE = '946684800 +0000'
GIT_ENV = {
    'GIT_AUTHOR_NAME': 'Upstream Author', 'GIT_AUTHOR_EMAIL': 'author@example.com', 'GIT_AUTHOR_DATE': FIXED_DATE,
    'GIT_COMMITTER_NAME': 'Upstream Author', 'GIT_COMMITTER_EMAIL': 'author@example.com',
    'GIT_COMMITTER_DATE': FIXED_DATE, 'GIT_CONFIG_GLOBAL': os.devnull, 'GIT_CONFIG_NOSYSTEM': '1',
}
BINARY = bytes(range(256)) * 4


def git(*args, cwd, input=None, env=None) -> str:
    full_env = {key: value for key, value in os.environ.items() if not key.startswith('GIT_')}
    result = subprocess.run(['git', *args], cwd=cwd, input=input, capture_output=True,
                            env={**full_env, **GIT_ENV, **(env or {})}, check=True)
    return result.stdout.decode().strip()


def write(path: Path, text: str | bytes, executable: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    path.chmod(0o755 if executable else 0o644)
    return path


@pytest.fixture(scope='session')
def run_git():
    """`run_git(*args, cwd=...)`: git with a fixed identity and date and no user configuration."""
    return git


@dataclass
class Upstream:
    path: Path
    commit: str
    tree: str


def commit_all(path: Path, message: str) -> Upstream:
    git('add', '-A', cwd=path)
    git('commit', '-q', '-m', message, cwd=path)
    return Upstream(path, git('rev-parse', 'HEAD', cwd=path), git('rev-parse', 'HEAD^{tree}', cwd=path))


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
    return commit_all(path, 'initial upstream')


@pytest.fixture(scope='session')
def demo_authors(tmp_path_factory, demo_upstream) -> Upstream:
    """The authors' repository: their diff against the upstream (with a trailing space, as real ones
    have) and their version of pkg/sub/deep.py."""
    work = tmp_path_factory.mktemp('authors-work') / 'work'
    git('clone', '-q', str(demo_upstream.path), str(work), cwd=work.parent)
    mod = work / 'pkg' / 'mod.py'
    mod.write_text(mod.read_text().replace('return 7\n', 'return 7 * CLIP \n'))
    diff = git('diff', cwd=work) + '\n'
    path = tmp_path_factory.mktemp('authors') / 'their-code'
    write(path / 'README.md', 'The authors\' code.\n')
    write(path / 'their.patch', diff)
    write(path / 'pkg' / 'sub' / 'deep.py', 'VALUE = 2  # theirs\n')
    git('init', '-q', '--initial-branch=main', cwd=path)
    return commit_all(path, 'their code')


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
    authors: Upstream

    def env(self, extra=None) -> dict:
        full_env = {key: value for key, value in os.environ.items() if not key.startswith(('GANPATCH_', 'GIT_'))}
        return {**full_env, 'GANPATCH_CACHE': str(self.cache), **(extra or {})}

    def run(self, *args, env=None, check_rc=None, cwd=None) -> subprocess.CompletedProcess:
        result = subprocess.run([sys.executable, str(self.root / 'apply.py'), *map(str, args)], cwd=cwd or self.root,
                                capture_output=True, text=True, env=self.env(env))
        if check_rc is not None:
            assert result.returncode == check_rc, result.stderr + result.stdout
        return result

    def build(self, dest: Path, *args) -> Path:
        self.run('--target', 'demo', '--dest', dest, '--source', self.upstream.path, *args, check_rc=0)
        return dest

    def main(self, *args) -> int:
        """apply.py's main() in this process (for monkeypatching), on this project."""
        import apply
        return apply.main([*map(str, args)], root=self.root)

    def snapshot(self) -> dict[str, bytes]:
        """Every byte under patches/ and overlays/."""
        return {str(path.relative_to(self.root)): path.read_bytes()
                for base in ('patches', 'overlays') for path in sorted((self.root / base).rglob('*')) if path.is_file()}

    def series(self) -> list[str]:
        text = (self.root / 'patches' / 'demo' / 'series').read_text()
        return [line for line in text.splitlines() if line and not line.startswith('#')]

    def edit_overlay(self, text: str = '#!/bin/sh\necho v2\n') -> None:
        """Changes an overlay file: every tree built before becomes outdated."""
        (self.root / 'overlays' / 'demo' / 'run_demo.sh').write_text(text)


def make_lock_text(upstream: Upstream, authors: Upstream | None = None, change: str = 'patch = "their.patch"') -> str:
    text = (f'[demo]\nrepo = "https://github.com/test/demo"\ncommit = "{upstream.commit}"\n'
            f'tree = "{upstream.tree}"\nlicense = "MIT"\nstatus = "usable"\naliases = ["Demo-Alias"]\n')
    if authors is not None:
        text += (f'\n[demo.authors]\nrepo = "https://github.com/them/their-code"\ncommit = "{authors.commit}"\n'
                 f'tree = "{authors.tree}"\nlicense = "none stated"\n{change}\n')
    return text


@pytest.fixture
def demo_project(tmp_path, demo_upstream, demo_authors, monkeypatch) -> Project:
    root = tmp_path / 'project'
    root.mkdir()
    shutil.copy(REPO_ROOT / 'apply.py', root / 'apply.py')
    shutil.copytree(REPO_ROOT / 'ganpatch_apply', root / 'ganpatch_apply', ignore=shutil.ignore_patterns('__pycache__'))
    (root / 'upstream.lock').write_text(make_lock_text(demo_upstream, demo_authors))
    names = make_patches(demo_upstream, root / 'patches' / 'demo', PATCH_EDITS)
    (root / 'patches' / 'demo' / 'series').write_text('# Patch series for demo.\n' + ''.join(f'{n}\n' for n in names))
    write(root / 'overlays' / 'common' / 'ganpatch' / '__init__.py', '"""ganpatch overlay."""\n')
    write(root / 'overlays' / 'demo' / 'run_demo.sh', '#!/bin/sh\npython -c "import ganpatch"\n', executable=True)
    project = Project(root, tmp_path / 'cache', demo_upstream, demo_authors)
    for key in [key for key in os.environ if key.startswith(('GANPATCH_', 'GIT_'))]:
        monkeypatch.delenv(key)
    monkeypatch.setenv('GANPATCH_CACHE', str(project.cache))  # for in-process runs
    return project


@pytest.fixture(scope='session')
def lock_text():
    """`lock_text(upstream, authors=None, change='patch = "their.patch"')`: an upstream.lock for target demo."""
    return make_lock_text


def stash_and_branch(tree: Path) -> None:
    """A stash (of a README edit) and a branch `idea` with one commit of its own; HEAD back on main."""
    (tree / 'README.md').write_text('work in progress\n')
    git('stash', '-q', cwd=tree)
    git('checkout', '-q', '-b', 'idea', cwd=tree)
    (tree / 'idea.py').write_text('IDEA = 1\n')
    git('add', 'idea.py', cwd=tree)
    git('commit', '-qm', 'an idea', cwd=tree)
    git('checkout', '-q', 'main', cwd=tree)


@pytest.fixture(scope='session')
def add_stash_and_branch():
    """`add_stash_and_branch(tree)`: see `stash_and_branch`."""
    return stash_and_branch


@pytest.fixture
def mirror_of(run_git, tmp_path):
    """`mirror_of(upstream, authors=None) -> Path`: a mirror folder holding bare clones of them."""
    def make(*repositories: tuple[Upstream, str]) -> Path:
        mirror = tmp_path / 'mirror'
        for repository, slug in repositories:
            run_git('clone', '-q', '--bare', str(repository.path), str(mirror / f'{slug}.git'), cwd=tmp_path)
        return mirror
    return make
