"""Running git: a scrubbed environment, a fixed identity, explicit repositories.

Every commit apply.py makes has the identity `ganpatch <ganpatch@localhost>` and the date
2000-01-01T00:00:00Z, and the user's and system's git configuration is ignored (including
configuration passed through the environment, GIT_CONFIG_COUNT/KEY/VALUE), so the same inputs give
the same commit ids on every machine. Commands on a built tree name its repository explicitly
(GIT_DIR, GIT_WORK_TREE): git never discovers an enclosing repository by walking up.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
from pathlib import Path

from .errors import GanpatchError

FIXED_DATE = '946684800 +0000'  # 2000-01-01T00:00:00Z
IDENTITY = 'ganpatch <ganpatch@localhost>'
IDENTITY_ENV = {
    'GIT_AUTHOR_NAME': 'ganpatch', 'GIT_AUTHOR_EMAIL': 'ganpatch@localhost', 'GIT_AUTHOR_DATE': FIXED_DATE,
    'GIT_COMMITTER_NAME': 'ganpatch', 'GIT_COMMITTER_EMAIL': 'ganpatch@localhost', 'GIT_COMMITTER_DATE': FIXED_DATE,
}
EMPTY_TREE = '4b825dc642cb6eb9a060e54bf8d69288fbee4904'
_KEPT_GIT_VARIABLES = ('GIT_EXEC_PATH',)  # where git finds its own programs


def git_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The caller's environment without any GIT_* variable (repository, configuration, identity), plus ours."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith('GIT_') or key in _KEPT_GIT_VARIABLES}
    env.update(GIT_CONFIG_NOSYSTEM='1', GIT_CONFIG_GLOBAL=os.devnull, GIT_TERMINAL_PROMPT='0', GIT_OPTIONAL_LOCKS='0',
               LC_ALL='C', LANGUAGE='C', **IDENTITY_ENV)
    env.update(extra or {})
    return env


def require_git() -> None:
    if shutil.which('git') is None:
        raise GanpatchError('git is not installed (no `git` on PATH)', 'install git >= 2.32 and retry')


def run_git(args: list[str], *, cwd: Path, stdin: bytes | None = None, check: bool = True,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    try:
        result = subprocess.run(['git', *args], cwd=cwd, input=stdin, capture_output=True, env=git_env(env))
    except FileNotFoundError as exc:
        raise GanpatchError('git is not installed (no `git` on PATH)', 'install git >= 2.32 and retry') from exc
    if check and result.returncode != 0:
        raise GanpatchError(f'git {args[0]} failed in {cwd}: {last_line(result.stderr) or result.returncode}',
                            'this is unexpected; rerun after checking the tree with git status')
    return result


def last_line(output: bytes) -> str:
    lines = output.decode(errors='replace').strip().splitlines()
    return lines[-1] if lines else ''


def first_error(output: bytes) -> str:
    """git's own complaint: the first `fatal:`/`error:` line, else the last line."""
    lines = output.decode(errors='replace').strip().splitlines()
    return next((line for line in lines if line.startswith(('fatal:', 'error:'))), lines[-1] if lines else '')


@dataclasses.dataclass(frozen=True)
class Repo:
    """A repository apply.py works in: a work tree with `.git`, or a bare one (work_tree None)."""
    git_dir: Path
    work_tree: Path | None = None
    alternates: tuple[Path, ...] = ()  # object stores read as well (a scratch repository borrowing objects)

    @classmethod
    def of_tree(cls, tree: Path) -> Repo:
        return cls(tree / '.git', tree)

    def env(self, index: Path | None = None) -> dict[str, str]:
        env = {'GIT_DIR': str(self.git_dir)}
        if self.work_tree is not None:
            env['GIT_WORK_TREE'] = str(self.work_tree)
        if index is not None:
            env['GIT_INDEX_FILE'] = str(index)
        if self.alternates:
            env['GIT_ALTERNATE_OBJECT_DIRECTORIES'] = os.pathsep.join(map(str, self.alternates))
        return env

    def run(self, args: list[str], *, stdin: bytes | None = None, check: bool = True,
            index: Path | None = None) -> subprocess.CompletedProcess:
        return run_git(args, cwd=self.work_tree or self.git_dir, stdin=stdin, check=check, env=self.env(index))

    def text(self, args: list[str], *, index: Path | None = None) -> str:
        return self.run(args, index=index).stdout.decode('utf-8', 'surrogateescape').strip()

    def has_object(self, oid: str, kind: str = 'commit') -> bool:
        return self.run(['cat-file', '-e', f'{oid}^{{{kind}}}'], check=False).returncode == 0

    def resolve(self, ref: str) -> str | None:
        """The commit a ref names, or None."""
        result = self.run(['rev-parse', '--verify', '--quiet', f'{ref}^{{commit}}'], check=False)
        return result.stdout.decode().strip() or None if result.returncode == 0 else None

    def write_object(self, kind: str, body: bytes) -> str:
        return self.run(['hash-object', '-t', kind, '-w', '--stdin'], stdin=body).stdout.decode().strip()

    def list_tree(self, treeish: str) -> dict[str, tuple[str, str]]:
        """path -> (mode, blob id) of every file (recursively) of a tree or commit."""
        out = self.run(['ls-tree', '-r', '-z', '--full-tree', treeish]).stdout
        files = {}
        for record in filter(None, out.split(b'\0')):
            meta, path = record.split(b'\t', 1)
            mode, _, oid = meta.decode().split()
            files[path.decode('utf-8', 'surrogateescape')] = (mode, oid)
        return files


def commit_object(tree: str, parents: list[str], author: str, message: bytes) -> bytes:
    """The body of a commit object; the committer is always ganpatch at the fixed date."""
    lines = [f'tree {tree}', *(f'parent {parent}' for parent in parents), f'author {author}',
             f'committer {IDENTITY} {FIXED_DATE}']
    return ('\n'.join(lines) + '\n\n').encode('utf-8', 'surrogateescape') + message
