"""The baseline the training benchmarks compare against: a patched tree at the commit before its first method
patch ("Optimizers and clipping..."), i.e. the upstream plus only the fixes it needs to run today."""

import subprocess
import sys

METHOD_PATCH_SUBJECT = 'Optimizers and clipping'


def compat_only_commit(tree):
    """The commit before the first method patch of the built tree `tree`; exits when there is none."""
    found = subprocess.run(['git', '-C', str(tree), 'log', '--format=%H', f'--grep=^{METHOD_PATCH_SUBJECT}', 'upstream..HEAD'],
                           capture_output=True, text=True, check=True).stdout.split()
    if len(found) != 1:
        sys.exit(f'{tree}: no single patch commit titled "{METHOD_PATCH_SUBJECT}..."; is it a tree built by apply.py?')
    return f'{found[0]}~1'


def export_commit(tree, commit, dest):
    """The files of `commit` of the git repository `tree`, written into the new folder `dest`."""
    dest.mkdir()
    subprocess.run(f'git -C {tree} archive {commit} | tar -x -C {dest}', shell=True, check=True)
    return dest
