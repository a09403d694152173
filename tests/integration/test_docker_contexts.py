"""The Dockerfiles' build step, without a docker engine: copy exactly what each Dockerfile COPYs into an empty
folder, as its build context would lay it out, and run the Dockerfile's apply.py command there (offline, from the
ganpatch cache or $GANPATCH_MIRROR instead of the image's /mirror). A file that apply.py needs and the Dockerfile
forgets to COPY fails here."""
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = sorted((REPO_ROOT / 'docker').glob('*/Dockerfile'))
EXIT_NO_SOURCE = 3  # apply.py: no cached or mirrored upstream

pytestmark = pytest.mark.integration


def build_stage(dockerfile: Path) -> tuple[list[list[str]], str]:
    """The COPY instructions ([sources..., destination]) before the apply.py command, and that command's target."""
    text = re.sub(r'\\\n', ' ', dockerfile.read_text())
    copies = []
    for line in text.splitlines():
        words = shlex.split(line, comments=True)
        if words[:1] == ['COPY']:
            copies.append(words[1:])
        if (match := re.search(r'python apply\.py --target (\S+)', line)):
            return copies, match.group(1)
    raise AssertionError(f'{dockerfile} runs no `python apply.py --target ...`')


def lay_out(copies: list[list[str]], context: Path) -> None:
    """Docker's COPY semantics for files and folders of the repository (no globs, no --from)."""
    for *sources, destination in copies:
        assert not any(word.startswith('--') for word in sources), f'unsupported COPY option in {sources}'
        for source in sources:
            origin = REPO_ROOT / source
            assert origin.exists(), f'COPY {source}: not in the repository'
            if origin.is_dir():
                shutil.copytree(origin, context / destination, dirs_exist_ok=True)
            else:
                target = context / destination / origin.name if destination.endswith('/') else context / destination
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, target)


@pytest.mark.parametrize('dockerfile', DOCKERFILES, ids=lambda path: path.parent.name)
def test_the_dockerfile_copies_everything_apply_needs(dockerfile, tmp_path, missing_upstream):
    copies, target = build_stage(dockerfile)
    assert target == dockerfile.parent.name
    context = tmp_path / 'context'
    context.mkdir()
    lay_out(copies, context)
    result = subprocess.run([sys.executable, 'apply.py', '--target', target, '--offline', '--dest', str(tmp_path / 'tree')],
                            cwd=context, capture_output=True, text=True)
    if result.returncode == EXIT_NO_SOURCE:
        missing_upstream(f'no cached or mirrored upstream for {target}:\n{result.stderr}')
    assert result.returncode == 0, result.stderr
    assert (tmp_path / 'tree' / 'ganpatch').is_dir() and (tmp_path / 'tree' / '.git').is_dir()


def test_every_target_has_a_dockerfile():
    targets = tomllib.loads((REPO_ROOT / 'upstream.lock').read_text())
    assert sorted(targets) == [path.parent.name for path in DOCKERFILES]
