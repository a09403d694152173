"""apply.py --refresh: tree edits back into patches/ and overlays/, byte-stable, proved before anything is written."""
import os
import subprocess

import pytest

from ganpatch_apply import refresh as refresh_module
from ganpatch_apply import staging
from ganpatch_apply.errors import EXIT_ERROR, EXIT_PATCH


def rebase_fixup(run_git, tree, subject_prefix, path, text):
    """Amends the patch commit whose subject starts with `subject_prefix` (fixup + autosquash)."""
    target = run_git('log', '--format=%H', f'--grep=^{subject_prefix}', 'upstream..HEAD', cwd=tree)
    (tree / path).write_text(text)
    run_git('commit', '-qam', 'fixup', f'--fixup={target}', cwd=tree)
    subprocess.run(['git', 'rebase', '-q', '-i', '--autosquash', 'upstream'], cwd=tree, check=True,
                   env={**os.environ, 'GIT_SEQUENCE_EDITOR': 'true', 'GIT_CONFIG_GLOBAL': os.devnull,
                        'GIT_COMMITTER_NAME': 'me', 'GIT_COMMITTER_EMAIL': 'me@example.com'})


def refresh(project, tree, *args):
    return project.run('--target', 'demo', '--dest', tree, '--refresh', *args)


def stray_files(project):
    """Anything under patches/ or overlays/ that is not a patch, the series or an overlay file."""
    return [path for path in project.snapshot() if '.tmp' in path or path.rsplit('/', 1)[-1].startswith('.')]


def test_refresh_of_an_unedited_tree_changes_no_byte(demo_project, tmp_path):
    tree = demo_project.build(tmp_path / 'out' / 'demo')
    before = demo_project.snapshot()
    result = refresh(demo_project, tree)
    assert result.returncode == 0, result.stderr
    assert 'no files changed' in result.stdout and 'verified' in result.stdout and demo_project.snapshot() == before


def test_refresh_round_trip(demo_project, run_git, tmp_path):
    tree = demo_project.build(tmp_path / 'out' / 'demo')
    mod = (tree / 'pkg' / 'mod.py').read_text().replace('return 30\n', 'return 33\n')
    rebase_fixup(run_git, tree, 'pkg/mod.py', 'pkg/mod.py', mod)
    (tree / 'pkg' / 'sub' / 'deep.py').write_text('VALUE = 2\n')
    run_git('commit', '-qam', 'deep: VALUE is 2\n\nWhy: a new patch made after the overlay commit.', cwd=tree)
    (tree / 'ganpatch' / '__init__.py').write_text('"""ganpatch overlay, edited in the tree."""\n')
    (tree / 'ganpatch' / 'extra.py').write_text('X = 1\n')

    result = refresh(demo_project, tree)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert 'rewrote patches/demo/0001-' in out and 'added patches/demo/0003-deep-VALUE-is-2.patch' in out
    assert 'updated patches/demo/series' in out and 'updated overlays/common/ganpatch/__init__.py' in out
    assert 'added overlays/common/ganpatch/extra.py' in out
    first = demo_project.snapshot()
    assert first['patches/demo/series'].decode().splitlines()[0] == '# Patch series for demo.'
    assert b'Subject: [PATCH] deep: VALUE is 2' in first['patches/demo/0003-deep-VALUE-is-2.patch']

    result = refresh(demo_project, tree)
    assert result.returncode == 0 and 'no files changed' in result.stdout, result.stderr + result.stdout
    assert demo_project.snapshot() == first

    fresh = demo_project.build(tmp_path / 'fresh' / 'demo', '--offline')
    for path in ('pkg/mod.py', 'pkg/sub/deep.py', 'ganpatch/__init__.py', 'ganpatch/extra.py'):
        assert (fresh / path).read_bytes() == (tree / path).read_bytes(), path
    assert run_git('log', '-1', '--format=%s', 'ganpatch-overlays~1', cwd=fresh) == 'deep: VALUE is 2'

    result = demo_project.run('--target', 'demo', '--dest', tree, '--offline')  # exported work is not lost work
    assert result.returncode == 0 and 'updated in place' in result.stderr, result.stderr
    assert run_git('rev-parse', 'HEAD^{tree}', cwd=tree) == run_git('rev-parse', 'HEAD^{tree}', cwd=fresh)


def test_adding_a_patch_rewrites_no_other_patch_file(demo_project, run_git, tmp_path):
    """The series was made with `[PATCH 1/2]` numbering; a third patch must not renumber the others."""
    tree = demo_project.build(tmp_path / 'demo')
    before = demo_project.snapshot()
    assert all(b'Subject: [PATCH ' in before[f'patches/demo/{name}'] for name in demo_project.series())
    (tree / 'pkg' / 'sub' / 'deep.py').write_text('VALUE = 9\n')
    run_git('commit', '-qam', 'deep: VALUE is 9\n\nWhy: a third patch.', cwd=tree)
    result = refresh(demo_project, tree)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[:2] == ['demo: added patches/demo/0003-deep-VALUE-is-9.patch',
                                              'demo: updated patches/demo/series']
    after = demo_project.snapshot()
    assert {path: data for path, data in after.items() if path in before and not path.endswith('series')} == \
        {path: data for path, data in before.items() if not path.endswith('series')}


def test_the_maintenance_loop_keeps_stashes_and_branches(demo_project, run_git, tmp_path, add_stash_and_branch):
    """The issue's reproduction: stash, branch, commit an upstream edit, --refresh, rebuild (from inside the tree)."""
    tree = demo_project.root / 'build' / 'demo'
    demo_project.run('--target', 'demo', '--source', demo_project.upstream.path, check_rc=0)
    add_stash_and_branch(tree)
    (tree / 'pkg' / 'sub' / 'deep.py').write_text('VALUE = 4\n')
    run_git('commit', '-qam', 'deep: VALUE is 4\n\nWhy: the upstream edit of the loop.', cwd=tree)
    demo_project.run('--target', 'demo', '--refresh', cwd=tree, check_rc=0)
    result = demo_project.run('--target', 'demo', '--offline', cwd=tree)
    assert result.returncode == 0, result.stderr
    assert 'Traceback' not in result.stderr and 'not in patches/' not in result.stderr  # it was exported
    assert run_git('stash', 'list', cwd=tree).count('stash@') == 1
    assert run_git('log', '-1', '--format=%s', 'idea', cwd=tree) == 'an idea'
    assert (tree / 'pkg' / 'sub' / 'deep.py').read_text() == 'VALUE = 4\n'


@pytest.mark.parametrize('message, complaint', [
    ('Explain the fix\n\nThe old code did:\ndiff --git a/x b/x\nwhich broke.', "'diff --git a/x b/x' would end"),
    ('Explain the fix\n\nBefore\n---\nafter the rule', "line 4 '---' would end the description"),
    ('Explain the fix\n\nFrom: someone else\n\nbody', 'would be read as a mail header'),
    ('A subject\nthat continues\n\nbody', 'a patch joins them into one subject line'),
    ('[PATCH] an old prefix\n\nbody', 'which git am strips'),
])
def test_messages_a_patch_file_would_change_are_refused_naming_the_line(demo_project, run_git, tmp_path, message,
                                                                        complaint):
    tree = demo_project.build(tmp_path / 'demo')
    (tree / 'pkg' / 'sub' / 'deep.py').write_text('VALUE = 5\n')
    run_git('commit', '-qa', '--cleanup=verbatim', '-m', message, cwd=tree)
    before = demo_project.snapshot()
    result = refresh(demo_project, tree)
    assert result.returncode == EXIT_ERROR, result.stderr
    assert complaint in result.stderr and 'reword' in result.stderr and demo_project.snapshot() == before


def test_a_message_change_the_checks_miss_is_caught_by_the_proof(demo_project, run_git, tmp_path):
    """`Re: ` is stripped from subjects by git am; only rebuilding the series shows it."""
    tree = demo_project.build(tmp_path / 'demo')
    (tree / 'pkg' / 'sub' / 'deep.py').write_text('VALUE = 6\n')
    run_git('commit', '-qam', 'Re: deep value\n\nWhy: a reply.', cwd=tree)
    before = demo_project.snapshot()
    result = refresh(demo_project, tree)
    assert result.returncode == EXIT_PATCH, result.stderr
    assert 'would not rebuild the tree' in result.stderr and 'its message would change' in result.stderr
    assert demo_project.snapshot() == before and stray_files(demo_project) == []
    assert not (demo_project.root / 'build' / '.refresh-demo').exists()


def test_an_overlay_edit_a_rebuild_cannot_reproduce_is_caught_by_the_proof(demo_project, run_git, tmp_path):
    """An overlay replacing an upstream file, deleted in the tree: a rebuild would bring the upstream file back."""
    (demo_project.root / 'overlays' / 'demo' / 'tool.sh').write_text('#!/bin/sh\necho ours\n')
    tree = demo_project.build(tmp_path / 'demo')
    (tree / 'tool.sh').unlink()
    before = demo_project.snapshot()
    result = refresh(demo_project, tree)
    assert result.returncode == EXIT_PATCH and 'differs from the tree' in result.stderr and 'tool.sh' in result.stderr
    assert demo_project.snapshot() == before


def test_an_empty_commit_is_left_out_and_the_series_still_builds(demo_project, run_git, tmp_path):
    tree = demo_project.build(tmp_path / 'demo')
    run_git('rebase', '-q', '-i', 'upstream', cwd=tree,
            env={'GIT_SEQUENCE_EDITOR': "sed -i '1a exec git commit -q --allow-empty -m \"a note to self\"'"})
    assert run_git('log', '--format=%s', 'upstream..HEAD', cwd=tree).count('a note to self') == 1
    result = refresh(demo_project, tree)
    assert result.returncode == 0, result.stderr
    assert 'a note to self changes no file; not exported' in result.stderr
    assert 'no files changed' in result.stdout
    demo_project.build(tmp_path / 'again', '--offline')


def test_refresh_ignores_untracked_outputs_and_refuses_uncommitted_upstream_edits(demo_project, tmp_path):
    tree = demo_project.build(tmp_path / 'out' / 'demo')
    (tree / 'logs').mkdir()
    (tree / 'logs' / 'train.log').write_text('loss\n')
    result = refresh(demo_project, tree)
    assert result.returncode == 0 and 'not exported: 1 untracked or ignored path' in result.stderr, result.stderr
    (tree / 'README.md').write_text('edited but not committed\n')
    before = demo_project.snapshot()
    result = refresh(demo_project, tree)
    assert result.returncode == EXIT_ERROR and 'M README.md' in result.stderr and 'commit them' in result.stderr
    assert demo_project.snapshot() == before


def test_refresh_refuses_a_tree_built_on_another_upstream(demo_project, tmp_path):
    tree = demo_project.build(tmp_path / 'demo')
    lock = demo_project.root / 'upstream.lock'
    lock.write_text(lock.read_text().replace(demo_project.upstream.tree, 'f' * 40))
    result = refresh(demo_project, tree)
    assert result.returncode == EXIT_ERROR and 'built on another upstream' in result.stderr and 'hint:' in result.stderr


def test_refresh_refuses_a_commit_mixing_overlay_and_upstream_files(demo_project, run_git, tmp_path):
    tree = demo_project.build(tmp_path / 'out' / 'demo')
    (tree / 'README.md').write_text('edited\n')
    (tree / 'ganpatch' / '__init__.py').write_text('edited\n')
    run_git('commit', '-qam', 'mixed', cwd=tree)
    result = refresh(demo_project, tree)
    assert result.returncode == EXIT_ERROR and 'both overlay and upstream files' in result.stderr


def test_refresh_does_not_overwrite_patches_changed_since_the_build(demo_project, run_git, tmp_path):
    tree = demo_project.build(tmp_path / 'out' / 'demo')
    series = demo_project.root / 'patches' / 'demo' / 'series'
    series.write_text(series.read_text() + '# someone else edited the series\n')
    run_git('commit', '-q', '--allow-empty', '-m', 'nothing', cwd=tree)
    result = refresh(demo_project, tree)
    assert result.returncode == 0, result.stderr  # comments are not patches
    patch = demo_project.root / 'patches' / 'demo' / demo_project.series()[0]
    patch.write_bytes(patch.read_bytes().replace(b'Why: a test patch', b'Why: a reworded test patch'))
    result = refresh(demo_project, tree)
    assert result.returncode == EXIT_ERROR and 'changed since' in result.stderr and '--force' in result.stderr
    assert b'reworded' in patch.read_bytes()
    assert refresh(demo_project, tree, '--force').returncode == 0 and b'reworded' not in patch.read_bytes()


def test_refresh_refuses_overlays_edited_in_both_places(demo_project, tmp_path):
    tree = demo_project.build(tmp_path / 'out' / 'demo')
    (tree / 'ganpatch' / '__init__.py').write_text('tree version\n')
    source = demo_project.root / 'overlays' / 'common' / 'ganpatch' / '__init__.py'
    source.write_text('repository version\n')
    result = refresh(demo_project, tree)
    assert result.returncode == EXIT_ERROR and 'ganpatch/__init__.py' in result.stderr
    assert source.read_text() == 'repository version\n'


class Killed(BaseException):
    """Stands for a kill at a chosen moment of an in-process run."""


@pytest.mark.parametrize('moment', ['staged', 'installing'])
def test_a_killed_refresh_leaves_no_temporary_file_and_is_finished_or_dropped(demo_project, run_git, monkeypatch,
                                                                             tmp_path, moment):
    tree = demo_project.build(tmp_path / 'demo')
    (tree / 'pkg' / 'sub' / 'deep.py').write_text('VALUE = 7\n')
    run_git('commit', '-qam', 'deep: VALUE is 7\n\nWhy: for the kill test.', cwd=tree)
    (tree / 'ganpatch' / 'clip.py').write_text('CLIP = 2\n')
    (tree / 'ganpatch' / '__init__.py').write_text('"""edited"""\n')
    before = demo_project.snapshot()
    real_replace = staging.os.replace
    moved = []

    def replace_then_die(source, destination):
        real_replace(source, destination)
        moved.append(destination)
        if len(moved) == 2:
            raise Killed

    def die(*args, **kwargs):
        raise Killed

    if moment == 'staged':
        monkeypatch.setattr(refresh_module, 'install', die)
    else:
        monkeypatch.setattr(staging.os, 'replace', replace_then_die)
    with pytest.raises(Killed):
        demo_project.main('--target', 'demo', '--dest', tree, '--refresh')
    monkeypatch.undo()
    assert stray_files(demo_project) == []
    if moment == 'staged':
        assert demo_project.snapshot() == before
    result = demo_project.run('--target', 'demo', '--dest', tmp_path / 'next', '--offline', check_rc=0)
    assert ('finishing an interrupted --refresh' in result.stderr) == (moment == 'installing')
    assert not (demo_project.root / 'build' / '.refresh-demo').exists() and stray_files(demo_project) == []
    if moment == 'installing':  # finished: the same files as an uninterrupted refresh
        assert (tmp_path / 'next' / 'pkg' / 'sub' / 'deep.py').read_text() == 'VALUE = 7\n'
        assert (tmp_path / 'next' / 'ganpatch' / 'clip.py').read_text() == 'CLIP = 2\n'
        assert refresh(demo_project, tree).stdout.count('no files changed') == 1


def test_three_way_resolution_is_exported_by_refresh(demo_project, patch_factory, run_git, tmp_path):
    """The maintainer loop: --3way, resolve the markers, git am --continue, --refresh, update."""
    dest = demo_project.build(tmp_path / 'out' / 'demo')
    directory = demo_project.root / 'patches' / 'demo'
    [third] = patch_factory(demo_project.upstream, directory, [('pkg/mod.py', 'return 30\n', 'return 300\n')],
                            base_edits=patch_factory.edits[:1], start=3)
    first = demo_project.series()[0]
    (directory / first).write_bytes((directory / first).read_bytes().replace(b'return 30', b'return 31'))
    with (directory / 'series').open('a') as series:
        series.write(f'{third}\n')
    assert demo_project.run('--target', 'demo', '--dest', dest, '--offline', '--3way').returncode == EXIT_PATCH
    [kept] = [path for path in dest.parent.iterdir() if path.name.startswith('demo.conflict-')]
    mod = kept / 'pkg' / 'mod.py'
    text = mod.read_text()
    mod.write_text(text[:text.index('<<<<<<<')] + '    return 310\n' + text[text.index('>>>>>>>'):].split('\n', 1)[1])
    run_git('add', 'pkg/mod.py', cwd=kept)
    run_git('am', '--continue', cwd=kept)
    result = refresh(demo_project, kept)
    assert result.returncode == 0, result.stderr
    assert demo_project.run('--target', 'demo', '--dest', dest, '--offline').returncode == 0
    assert 'return 310\n' in (dest / 'pkg' / 'mod.py').read_text()
