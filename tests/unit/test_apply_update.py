"""A built tree is the user's workspace: updates in place, with checkout semantics, and never lose anything."""
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest

from ganpatch_apply import update
from ganpatch_apply.errors import EXIT_LOCAL_WORK


def head(run_git, tree):
    return run_git('rev-parse', 'HEAD', cwd=tree)


def fresh_head(project, run_git, tmp_path):
    """The HEAD a fresh build from the current inputs has (builds are reproducible)."""
    return head(run_git, project.build(tmp_path / 'fresh-reference', '--offline'))


def files_of(tree):
    return {path.relative_to(tree).as_posix(): path.read_bytes() for path in tree.rglob('*')
            if path.is_file() and '.git' not in path.relative_to(tree).parts}


def outputs(tree):
    """Training outputs and user data: untracked and ignored files."""
    (tree / 'logs' / 'run-0').mkdir(parents=True)
    (tree / 'logs' / 'run-0' / 'metrics.jsonl').write_text('{"loss": 1}\n')
    (tree / 'data').mkdir()
    (tree / 'data' / 'cifar.npz').write_bytes(b'\0' * 100)
    (tree / 'notes.txt').write_text('my notes\n')
    (tree / '.git' / 'info' / 'exclude').write_text('logs/\ndata/\n')
    return {'logs/run-0/metrics.jsonl': b'{"loss": 1}\n', 'data/cifar.npz': b'\0' * 100, 'notes.txt': b'my notes\n'}


def test_an_up_to_date_tree_is_never_refused(demo_project, run_git, tmp_path):
    tree = demo_project.build(tmp_path / 'demo')
    kept = outputs(tree)
    (tree / 'pkg' / 'mod.py').write_text('# my edit\n')
    run_git('commit', '-qam', 'my experiment', cwd=tree)
    (tree / 'README.md').write_text('edited, not committed\n')
    before = files_of(tree), head(run_git, tree)
    result = demo_project.run('--target', 'demo', '--dest', tree, '--offline', check_rc=0)
    assert 'is up to date (left as it is: 1 modified file, 1 commit after the build' in result.stderr
    assert (files_of(tree), head(run_git, tree)) == before
    assert all((tree / path).read_bytes() == data for path, data in kept.items())
    assert demo_project.run('--target', 'all', '--dest', tmp_path, '--offline').returncode == 0


def test_an_outdated_tree_is_updated_in_place_and_git_state_survives(demo_project, run_git, tmp_path,
                                                                      add_stash_and_branch):
    tree = demo_project.build(tmp_path / 'demo')
    old_head = head(run_git, tree)
    kept = outputs(tree)
    add_stash_and_branch(tree)
    run_git('tag', 'v-mine', cwd=tree)
    run_git('remote', 'add', 'lab', 'https://example.com/lab.git', cwd=tree)
    run_git('config', 'user.name', 'Researcher', cwd=tree)
    hook = tree / '.git' / 'hooks' / 'post-commit'
    hook.write_text('#!/bin/sh\ntrue\n')
    inode = (tree / '.git').stat().st_ino

    demo_project.edit_overlay()
    result = demo_project.run('--target', 'demo', '--dest', tree, '--offline', check_rc=0)
    assert 'updated in place' in result.stderr and 'untracked or ignored paths kept' in result.stderr
    assert head(run_git, tree) == fresh_head(demo_project, run_git, tmp_path)
    assert (tree / 'run_demo.sh').read_text() == '#!/bin/sh\necho v2\n'
    assert all((tree / path).read_bytes() == data for path, data in kept.items())
    assert run_git('stash', 'list', cwd=tree).startswith('stash@{0}: WIP on main')
    assert run_git('log', '-1', '--format=%s', 'idea', cwd=tree) == 'an idea'
    assert run_git('rev-parse', 'v-mine', cwd=tree) == old_head
    assert run_git('remote', cwd=tree) == 'lab' and run_git('config', 'user.name', cwd=tree) == 'Researcher'
    assert hook.read_text() == '#!/bin/sh\ntrue\n' and (tree / '.git').stat().st_ino == inode
    [previous] = run_git('for-each-ref', '--format=%(refname) %(objectname)', 'refs/ganpatch/previous',
                         cwd=tree).splitlines()
    assert previous.split() == [previous.split()[0], old_head] and previous.split()[0] in result.stderr
    assert run_git('status', '--porcelain', '--untracked-files=no', cwd=tree) == ''
    assert run_git('rev-parse', 'upstream^{tree}', cwd=tree) == demo_project.upstream.tree


def test_a_modified_tracked_file_blocks_and_force_moves_just_it_aside(demo_project, run_git, tmp_path):
    tree = demo_project.build(tmp_path / 'out' / 'demo')
    kept = outputs(tree)
    (tree / 'pkg' / 'mod.py').write_text('# research edit\n')
    (tree / 'new.py').write_text('staged\n')
    run_git('add', 'new.py', cwd=tree)
    (tree / 'new.py').write_text('staged, then edited\n')
    demo_project.edit_overlay()
    before = files_of(tree), head(run_git, tree)
    result = demo_project.run('--target', 'demo', '--dest', tree, '--offline')
    assert result.returncode == EXIT_LOCAL_WORK, result.stderr
    assert 'pkg/mod.py (modified)' in result.stderr and 'new.py (staged new file)' in result.stderr
    assert '--force' in result.stderr and (files_of(tree), head(run_git, tree)) == before

    result = demo_project.run('--target', 'demo', '--dest', tree, '--offline', '--force', check_rc=0)
    [aside] = [path for path in tree.parent.iterdir() if path.name.startswith('demo.aside-')]
    assert aside.name in result.stderr
    assert (aside / 'pkg' / 'mod.py').read_text() == '# research edit\n'
    assert (aside / 'new.py').read_text() == 'staged, then edited\n'
    assert (aside / 'new.py.staged').read_text() == 'staged\n'
    assert sorted(p.relative_to(aside).as_posix() for p in aside.rglob('*') if p.is_file()) == \
        ['new.py', 'new.py.staged', 'pkg/mod.py']
    assert 'return 30' in (tree / 'pkg' / 'mod.py').read_text() and not (tree / 'new.py').exists()
    assert all((tree / path).read_bytes() == data for path, data in kept.items())
    assert head(run_git, tree) == fresh_head(demo_project, run_git, tmp_path)


def test_an_untracked_file_an_incoming_file_would_overwrite_blocks(demo_project, run_git, tmp_path):
    tree = demo_project.build(tmp_path / 'demo')
    overlays = demo_project.root / 'overlays'
    (overlays / 'common' / 'ganpatch' / 'clip.py').write_text('CLIP = 1\n')
    (overlays / 'demo' / 'tools').mkdir()
    (overlays / 'demo' / 'tools' / 'run.sh').write_text('#!/bin/sh\n')
    (tree / 'ganpatch' / 'clip.py').write_text('my own clip.py\n')
    (tree / 'tools').write_text('a file where a folder goes\n')
    result = demo_project.run('--target', 'demo', '--dest', tree, '--offline')
    assert result.returncode == EXIT_LOCAL_WORK, result.stderr
    assert 'ganpatch/clip.py (untracked; an incoming file would overwrite it)' in result.stderr
    assert 'tools (untracked; an incoming folder goes there)' in result.stderr
    status = demo_project.run('--target', 'demo', '--dest', tree, '--status', check_rc=0).stdout
    assert ': modified: the update is blocked by 2 files' in status and 'blocks: tools' in status
    (tree / 'tools').unlink()
    (tree / 'ganpatch' / 'clip.py').write_text('CLIP = 1\n')  # the incoming content: nothing to lose
    demo_project.run('--target', 'demo', '--dest', tree, '--offline', check_rc=0)
    assert (tree / 'tools' / 'run.sh').is_file()


def test_an_edit_hidden_by_skip_worktree_blocks(demo_project, run_git, tmp_path):
    tree = demo_project.build(tmp_path / 'demo')
    run_git('update-index', '--skip-worktree', 'README.md', cwd=tree)
    (tree / 'README.md').write_text('hidden edit\n')
    assert run_git('status', '--porcelain', cwd=tree) == ''
    demo_project.edit_overlay()
    result = demo_project.run('--target', 'demo', '--dest', tree, '--offline')
    assert result.returncode == EXIT_LOCAL_WORK and 'README.md (modified)' in result.stderr
    assert (tree / 'README.md').read_text() == 'hidden edit\n'


def test_status_distinguishes_the_states(demo_project, run_git, tmp_path):
    tree = tmp_path / 'demo'
    status = demo_project.run('--target', 'demo', '--dest', tree, '--status', check_rc=0).stdout
    assert ': missing' in status
    demo_project.build(tree)
    status = demo_project.run('--target', 'demo', '--dest', tree, '--status', check_rc=0).stdout
    assert status.splitlines()[0].endswith(': up to date') and 'pristine' in status and status.count('applied ') == 2
    assert "authors: branch authors not built" in status
    demo_project.edit_overlay()
    status = demo_project.run('--target', 'demo', '--dest', tree, '--status', check_rc=0).stdout
    assert status.splitlines()[0].endswith(': outdated') and 'overlays changed: run_demo.sh' in status
    outputs(tree)
    status = demo_project.run('--target', 'demo', '--dest', tree, '--status', check_rc=0).stdout
    assert status.splitlines()[0].endswith(': outdated, 3 untracked or ignored paths will be kept')
    (tree / 'README.md').write_text('edited\n')
    status = demo_project.run('--target', 'demo', '--dest', tree, '--status', check_rc=0).stdout
    assert ': modified: the update is blocked by 1 file' in status and 'blocks: README.md (modified)' in status
    assert 'local:  M README.md' in status
    assert files_of(tree)['README.md'] == b'edited\n'  # --status changed nothing


class Killed(BaseException):
    """Stands for a kill at a chosen moment of an in-process run."""


@pytest.mark.parametrize('moment', ['checkout', 'refs', 'stamp'])
def test_an_interrupted_update_is_reported_and_finished_by_the_next_run(demo_project, run_git, monkeypatch, tmp_path,
                                                                       moment):
    tree = demo_project.build(tmp_path / 'demo')
    kept = outputs(tree)
    demo_project.edit_overlay()
    real_run = update.Repo.run

    def checkout_then_die(repo, commit):
        private = repo.git_dir / 'ganpatch-checkout.index'
        shutil.copyfile(repo.git_dir / 'index', private)
        repo.run(['read-tree', '--reset', '-u', commit], index=private)
        raise Killed  # the work tree is written, the index not yet renamed into place

    def refs_then_die(self, args, **kwargs):
        result = real_run(self, args, **kwargs)
        if args[:1] == ['update-ref'] and '--stdin' in args:
            raise Killed
        return result

    def die(*args):
        raise Killed

    if moment == 'checkout':
        monkeypatch.setattr(update, 'checkout', checkout_then_die)
    elif moment == 'refs':
        monkeypatch.setattr(update.Repo, 'run', refs_then_die)
    else:
        monkeypatch.setattr(update, 'write_stamp', die)
    with pytest.raises(Killed):
        demo_project.main('--target', 'demo', '--dest', tree, '--offline')
    monkeypatch.undo()

    status = demo_project.run('--target', 'demo', '--dest', tree, '--status', check_rc=0).stdout
    assert ': interrupted: the update started' in status and 'finishes it' in status
    result = demo_project.run('--target', 'demo', '--dest', tree, '--offline', check_rc=0)
    assert 'finishing the interrupted update' in result.stderr
    assert head(run_git, tree) == fresh_head(demo_project, run_git, tmp_path)
    assert run_git('status', '--porcelain', '--untracked-files=no', cwd=tree) == ''
    assert all((tree / path).read_bytes() == data for path, data in kept.items())
    assert demo_project.run('--target', 'demo', '--dest', tree, '--status', check_rc=0).stdout.splitlines()[0] \
        .endswith('up to date')


def test_an_interrupted_update_with_new_work_in_the_way_is_not_finished_blindly(demo_project, run_git, monkeypatch,
                                                                              tmp_path):
    tree = demo_project.build(tmp_path / 'demo')
    demo_project.edit_overlay()

    def die(*args):
        raise Killed

    monkeypatch.setattr(update, 'checkout', die)
    with pytest.raises(Killed):
        demo_project.main('--target', 'demo', '--dest', tree, '--offline')
    monkeypatch.undo()
    (tree / 'run_demo.sh').write_text('edited after the kill\n')
    result = demo_project.run('--target', 'demo', '--dest', tree, '--offline')
    assert result.returncode == EXIT_LOCAL_WORK and 'cannot be finished' in result.stderr
    assert (tree / 'run_demo.sh').read_text() == 'edited after the kill\n'


KILLING_GIT = """#!/bin/sh
# git, except that after the command matching $KILL_AFTER it kills its whole process group (apply.py included).
"$REAL_GIT" "$@"
status=$?
case " $* " in
    *"$KILL_AFTER"*) kill -KILL -"$(ps -o pgid= -p $$ | tr -d ' ')" ;;
esac
exit $status
"""


@pytest.mark.parametrize('after', ['mailinfo', 'read-tree --reset -u', 'update demo --stdin', 'symbolic-ref'])
def test_kill_9_mid_update_is_finished_by_the_next_run(demo_project, run_git, tmp_path, after):
    """A real SIGKILL of apply.py and its git children right after a chosen git command of an update."""
    tree = demo_project.build(tmp_path / 'demo')
    kept = outputs(tree)
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    (bin_dir / 'git').write_text(KILLING_GIT)
    (bin_dir / 'git').chmod(0o755)
    demo_project.edit_overlay()
    env = demo_project.env({'PATH': f'{bin_dir}{os.pathsep}{os.environ["PATH"]}', 'KILL_AFTER': after,
                            'REAL_GIT': shutil.which('git')})
    process = subprocess.run([sys.executable, str(demo_project.root / 'apply.py'), '--target', 'demo', '--dest',
                              str(tree), '--offline'], env=env, capture_output=True, start_new_session=True)
    assert process.returncode == -signal.SIGKILL
    status = demo_project.run('--target', 'demo', '--dest', tree, '--status', check_rc=0).stdout
    before_journal = after == 'mailinfo'  # killed while the new commits are made: nothing had changed yet
    assert (': interrupted:' in status) != before_journal, status
    result = demo_project.run('--target', 'demo', '--dest', tree, '--offline', check_rc=0)
    assert ('finishing the interrupted update' in result.stderr) != before_journal
    assert head(run_git, tree) == fresh_head(demo_project, run_git, tmp_path)
    assert run_git('status', '--porcelain', '--untracked-files=no', cwd=tree) == ''
    assert all((tree / path).read_bytes() == data for path, data in kept.items())
    assert not list((tree / '.git').glob('**/*.lock'))


def test_work_written_while_an_update_runs_is_kept(demo_project, run_git, tmp_path):
    tree = demo_project.build(tmp_path / 'demo')
    demo_project.edit_overlay()
    written, stop = [], threading.Event()

    def training_run():
        (tree / 'logs').mkdir(exist_ok=True)
        while not stop.is_set():
            path = tree / 'logs' / f'step-{len(written)}.txt'
            path.write_text('loss\n')
            written.append(path)
            time.sleep(0.01)

    writer = threading.Thread(target=training_run)
    writer.start()
    try:
        result = demo_project.run('--target', 'demo', '--dest', tree, '--offline')
    finally:
        stop.set()
        writer.join()
    assert result.returncode == 0, result.stderr
    assert len(written) > 5 and all(path.read_text() == 'loss\n' for path in written)


def test_running_from_inside_the_tree_works(demo_project, run_git):
    tree = demo_project.root / 'build' / 'demo'
    demo_project.run('--target', 'demo', '--source', demo_project.upstream.path, check_rc=0)
    demo_project.edit_overlay()
    result = demo_project.run('--target', 'demo', '--offline', cwd=tree)
    assert result.returncode == 0, result.stderr
    assert 'updated in place .:' in result.stderr or 'updated in place' in result.stderr
    assert (tree / 'run_demo.sh').read_text() == '#!/bin/sh\necho v2\n'
    status = demo_project.run('--target', 'demo', '--dest', '.', '--status', cwd=tree, check_rc=0).stdout
    assert status.splitlines()[0] == 'demo: .: up to date'


def test_commits_after_the_build_are_kept_and_named(demo_project, run_git, tmp_path):
    tree = demo_project.build(tmp_path / 'demo')
    built = head(run_git, tree)
    (tree / 'pkg' / 'sub' / 'deep.py').write_text('VALUE = 3\n')
    run_git('commit', '-qam', 'deep: VALUE is 3', cwd=tree)
    mine = head(run_git, tree)
    status = demo_project.run('--target', 'demo', '--dest', tree, '--status', check_rc=0).stdout
    assert 'commit after the build:' in status and 'deep: VALUE is 3' in status
    demo_project.edit_overlay()
    result = demo_project.run('--target', 'demo', '--dest', tree, '--offline', check_rc=0)
    [previous] = run_git('for-each-ref', '--format=%(refname)', 'refs/ganpatch/previous', cwd=tree).splitlines()
    assert run_git('rev-parse', previous, cwd=tree) == mine
    assert 'deep: VALUE is 3' in result.stderr and f'git cherry-pick {built[:12]}..{previous}' in result.stderr


def test_a_git_operation_in_progress_blocks_the_update(demo_project, run_git, tmp_path):
    tree = demo_project.build(tmp_path / 'demo')
    run_git('rebase', '-q', '-i', 'upstream', cwd=tree, env={'GIT_SEQUENCE_EDITOR': 'sed -i 1ibreak'})
    demo_project.edit_overlay()
    result = demo_project.run('--target', 'demo', '--dest', tree, '--offline')
    assert result.returncode == EXIT_LOCAL_WORK and 'a git rebase is in progress' in result.stderr
    assert 'hint: finish it' in result.stderr


def test_an_update_checks_out_main_when_head_is_elsewhere(demo_project, run_git, tmp_path):
    tree = demo_project.build(tmp_path / 'demo')
    run_git('checkout', '-q', '-b', 'idea', cwd=tree)
    (tree / 'idea.txt').write_text('x\n')
    run_git('add', 'idea.txt', cwd=tree)
    run_git('commit', '-qm', 'idea', cwd=tree)
    idea = head(run_git, tree)
    status = demo_project.run('--target', 'demo', '--dest', tree, '--status', check_rc=0).stdout
    assert 'HEAD: on branch idea (an update checks out main)' in status
    demo_project.edit_overlay()
    demo_project.run('--target', 'demo', '--dest', tree, '--offline', check_rc=0)
    assert run_git('branch', '--show-current', cwd=tree) == 'main' and not (tree / 'idea.txt').exists()
    assert run_git('rev-parse', 'idea', cwd=tree) == idea


def test_an_update_after_an_upstream_change_fetches_and_keeps_outputs(demo_project, run_git, tmp_path):
    """A new pin: the new upstream is imported into the same repository."""
    tree = demo_project.build(tmp_path / 'demo')
    kept = outputs(tree)
    upstream = tmp_path / 'upstream-v2'
    run_git('clone', '-q', str(demo_project.upstream.path), str(upstream), cwd=tmp_path)
    (upstream / 'CHANGELOG').write_text('v2\n')
    run_git('add', 'CHANGELOG', cwd=upstream)
    run_git('commit', '-qm', 'v2', cwd=upstream)
    lock = demo_project.root / 'upstream.lock'
    lock.write_text(lock.read_text().replace(demo_project.upstream.commit, run_git('rev-parse', 'HEAD', cwd=upstream))
                    .replace(demo_project.upstream.tree, run_git('rev-parse', 'HEAD^{tree}', cwd=upstream)))
    result = demo_project.run('--target', 'demo', '--dest', tree, '--source', upstream, check_rc=0)
    assert 'updated in place' in result.stderr and (tree / 'CHANGELOG').read_text() == 'v2\n'
    assert all((tree / path).read_bytes() == data for path, data in kept.items())
    assert run_git('log', '-1', '--format=%s', 'upstream', cwd=tree).startswith('Upstream test/demo@')
