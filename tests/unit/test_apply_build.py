"""apply.py end to end on a small upstream: the built tree, re-runs, conflicts, errors, atomicity."""
import os
import shutil
import socket
import sys

import pytest

EXIT_ERROR, EXIT_NO_SOURCE, EXIT_PATCH, EXIT_LOCAL_WORK = 1, 3, 5, 6


def log_subjects(run_git, tree):
    return run_git('log', '--reverse', '--format=%s', cwd=tree).splitlines()


def siblings(dest):
    return sorted(path.name for path in dest.parent.iterdir()) if dest.parent.exists() else []


def test_build_makes_upstream_patch_and_overlay_commits(demo_project, run_git, tmp_path):
    tree = demo_project.build(tmp_path / 'build' / 'demo')
    upstream = demo_project.upstream
    assert log_subjects(run_git, tree) == [f'Upstream test/demo@{upstream.commit}', "pkg/mod.py: change 'return 3'",
                                           "README.md: change 'run tool.sh'", 'ganpatch: overlays']
    assert run_git('rev-parse', 'upstream^{tree}', cwd=tree) == upstream.tree
    assert run_git('log', '-1', '--format=%an <%ae> %ad', '--date=iso-strict', 'upstream', cwd=tree) == \
        'ganpatch <ganpatch@localhost> 2000-01-01T00:00:00+00:00'
    assert 'Why: a test patch (ours).' in run_git('log', '-1', '--format=%b', 'HEAD~1', cwd=tree)
    assert run_git('diff', '--name-only', 'upstream', 'ganpatch-overlays~1', cwd=tree).splitlines() == \
        ['README.md', 'pkg/mod.py']
    assert run_git('status', '--porcelain', cwd=tree) == ''
    assert (tree / 'ganpatch' / '__init__.py').is_file() and os.access(tree / 'run_demo.sh', os.X_OK)
    assert os.access(tree / 'tool.sh', os.X_OK) and os.readlink(tree / 'link.py') == 'pkg/mod.py'
    assert (tree / '.git' / 'ganpatch-stamp.json').is_file()
    assert siblings(tree) == ['demo']


def test_builds_are_reproducible(demo_project, run_git, tmp_path):
    first = demo_project.build(tmp_path / 'a')
    second = demo_project.build(tmp_path / 'b', '--offline')
    assert run_git('rev-parse', 'HEAD', cwd=first) == run_git('rev-parse', 'HEAD', cwd=second)


def test_target_names_are_case_insensitive_with_aliases(demo_project, tmp_path):
    source = demo_project.upstream.path
    result = demo_project.run('--target', 'DEMO-alias', '--source', source, '--dest', tmp_path / 'x')
    assert result.returncode == 0, result.stderr


def test_rerun_is_a_no_op_and_outdated_trees_are_rebuilt(demo_project, tmp_path):
    tree = demo_project.build(tmp_path / 'out' / 'demo')
    marker = tree / '.git' / 'marker'
    marker.write_text('survives a no-op')
    result = demo_project.run('--target', 'demo', '--dest', tree, '--offline', check_rc=0)
    assert 'up to date' in result.stderr and marker.exists()
    (demo_project.root / 'overlays' / 'demo' / 'run_demo.sh').write_text('#!/bin/sh\necho v2\n')
    result = demo_project.run('--target', 'demo', '--dest', tree, '--offline', check_rc=0)
    assert 'built' in result.stderr and not marker.exists()
    assert (tree / 'run_demo.sh').read_text() == '#!/bin/sh\necho v2\n'
    assert siblings(tree) == ['demo']  # a clean old tree is replaced, not backed up


@pytest.mark.parametrize('edit', ['uncommitted', 'commit', 'untracked', 'ignored'])
def test_local_work_is_refused_and_force_keeps_a_backup(demo_project, run_git, tmp_path, edit):
    tree = demo_project.build(tmp_path / 'out' / 'demo')
    if edit == 'ignored':
        (tree / '.gitignore').write_text('*.log\n')
        run_git('add', '.gitignore', cwd=tree)
        run_git('commit', '-qm', 'ignore logs', cwd=tree)
        run_git('update-ref', 'HEAD', 'HEAD~1', cwd=tree)  # only the file stays ...
        run_git('reset', '-q', cwd=tree)
    if edit in ('uncommitted', 'commit'):
        (tree / 'pkg' / 'mod.py').write_text('# my research edit\n')
    if edit == 'commit':
        run_git('commit', '-qam', 'my research edit', cwd=tree)
    if edit == 'untracked':
        (tree / 'notes.txt').write_text('results\n')
    if edit == 'ignored':
        (tree / 'train.log').write_text('results\n')
    (demo_project.root / 'overlays' / 'demo' / 'run_demo.sh').write_text('#!/bin/sh\necho v2\n')  # outdated too
    before = {path: path.read_bytes() for path in tree.rglob('*') if path.is_file()}
    result = demo_project.run('--target', 'demo', '--dest', tree, '--offline')
    assert result.returncode == EXIT_LOCAL_WORK, result.stderr
    expected = {'uncommitted': 'pkg/mod.py', 'commit': 'my research edit', 'untracked': 'notes.txt',
                'ignored': 'train.log'}[edit]
    assert expected in result.stderr and '--refresh' in result.stderr and '--force' in result.stderr
    assert {path: path.read_bytes() for path in tree.rglob('*') if path.is_file()} == before

    result = demo_project.run('--target', 'demo', '--dest', tree, '--offline', '--force', check_rc=0)
    [backup] = [name for name in siblings(tree) if name.startswith('demo.backup-')]
    assert backup in result.stderr
    backed_up = tree.parent / backup
    assert {backed_up / path.relative_to(tree): data for path, data in before.items()} == \
        {path: path.read_bytes() for path in backed_up.rglob('*') if path.is_file()}
    assert (tree / 'run_demo.sh').read_text() == '#!/bin/sh\necho v2\n'


def test_a_directory_that_is_not_a_ganpatch_tree_is_refused(demo_project, tmp_path):
    dest = tmp_path / 'out' / 'demo'
    dest.mkdir(parents=True)
    (dest / 'thesis.tex').write_text('precious')
    result = demo_project.run('--target', 'demo', '--source', demo_project.upstream.path, '--dest', dest)
    assert result.returncode == EXIT_LOCAL_WORK and 'not a ganpatch tree' in result.stderr
    assert (dest / 'thesis.tex').read_text() == 'precious'


def add_conflicting_patch(project):
    """A third patch whose context no longer matches (it expects `return 5` to read `return 50`)."""
    patch = project.root / 'patches' / 'demo' / '0003-conflict.patch'
    patch.write_text(
        'From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001\n'
        'From: Someone <someone@example.com>\nDate: Sat, 1 Jan 2000 00:00:00 +0000\n'
        'Subject: [PATCH] pkg/mod.py: f5 returns 500\n\nWhy: to conflict.\n---\n'
        'diff --git a/pkg/mod.py b/pkg/mod.py\n--- a/pkg/mod.py\n+++ b/pkg/mod.py\n'
        '@@ -1,3 +1,3 @@\n def f0():\n-    return 0\n+    return -1\n \n'
        '@@ -17,3 +17,3 @@ def f4():\n def f5():\n-    return 50\n+    return 500\n \n'
        '--\n')
    with (project.root / 'patches' / 'demo' / 'series').open('a') as series:
        series.write('0003-conflict.patch\n')


def test_a_conflicting_patch_names_patch_file_and_hunk_and_leaves_dest_untouched(demo_project, run_git, tmp_path):
    tree = demo_project.build(tmp_path / 'out' / 'demo')
    head = run_git('rev-parse', 'HEAD', cwd=tree)
    add_conflicting_patch(demo_project)
    result = demo_project.run('--target', 'demo', '--dest', tree, '--offline')
    assert result.returncode == EXIT_PATCH, result.stderr
    assert 'patch 0003-conflict.patch does not apply: pkg/mod.py, hunk #2 (@@ -17,3 +17,3 @@)' in result.stderr
    assert run_git('rev-parse', 'HEAD', cwd=tree) == head and run_git('status', '--porcelain', cwd=tree) == ''
    assert siblings(tree) == ['demo']
    fresh = tmp_path / 'fresh' / 'demo'
    assert demo_project.run('--target', 'demo', '--dest', fresh, '--offline').returncode == EXIT_PATCH
    assert siblings(fresh) == []


def rework_first_patch_and_add_a_dependent_one(project, make_patches):
    """Patch 1 now makes f3 return 31; a new patch 3, made on the old patch 1, expects `return 30`."""
    directory = project.root / 'patches' / 'demo'
    old_first, second = read_series_names(directory)
    (directory / old_first).unlink()
    [first] = make_patches(project.upstream, directory, [('pkg/mod.py', 'return 3\n', 'return 31\n')])
    [third] = make_patches(project.upstream, directory, [('pkg/mod.py', 'return 30\n', 'return 300\n')],
                           base_edits=make_patches.edits[:1], start=3)
    (directory / 'series').write_text(f'{first}\n{second}\n{third}\n')


def read_series_names(directory):
    return [line for line in (directory / 'series').read_text().splitlines() if not line.startswith('#')]


def test_three_way_leaves_conflict_markers_using_the_previous_tree(demo_project, patch_factory, tmp_path):
    dest = demo_project.build(tmp_path / 'out' / 'demo')
    rework_first_patch_and_add_a_dependent_one(demo_project, patch_factory)
    result = demo_project.run('--target', 'demo', '--dest', dest, '--offline', '--3way')
    assert result.returncode == EXIT_PATCH, result.stderr
    [kept] = [dest.parent / name for name in siblings(dest) if name.startswith('demo.conflict-')]
    assert kept.name in result.stderr and 'conflict markers in pkg/mod.py' in result.stderr
    text = (kept / 'pkg' / 'mod.py').read_text()
    assert '<<<<<<<' in text and 'return 31' in text and 'return 300' in text
    assert 'return 30\n' in (dest / 'pkg' / 'mod.py').read_text()  # the destination is untouched


def test_three_way_without_the_preimage_writes_reject_files(demo_project, patch_factory, tmp_path):
    rework_first_patch_and_add_a_dependent_one(demo_project, patch_factory)
    dest = tmp_path / 'out' / 'demo'
    result = demo_project.run('--target', 'demo', '--source', demo_project.upstream.path, '--dest', dest, '--3way')
    assert result.returncode == EXIT_PATCH, result.stderr
    [kept] = [dest.parent / name for name in siblings(dest) if name.startswith('demo.conflict-')]
    assert 'pkg/mod.py.rej' in result.stderr and (kept / 'pkg' / 'mod.py.rej').is_file() and not dest.exists()


def test_a_patch_missing_from_the_series_is_an_error(demo_project, tmp_path):
    (demo_project.root / 'patches' / 'demo' / 'series').write_text('0001-gone.patch\n')
    result = demo_project.run('--target', 'demo', '--source', demo_project.upstream.path, '--dest', tmp_path / 'd')
    assert result.returncode == EXIT_ERROR
    assert 'lists 0001-gone.patch' in result.stderr and 'hint:' in result.stderr and not (tmp_path / 'd').exists()


@pytest.mark.parametrize('args, message', [
    (['--target', 'nope'], "unknown target 'nope'"),
    (['--target', 'all', '--source', '.'], '--source names the upstream of one target'),
    (['--target', 'demo', '--mirror', '/nonexistent'], 'is not a directory'),
    (['--target', 'demo', '--status', '--3way'], 'only apply when building'),
])
def test_bad_input_is_one_error_line_and_a_hint(demo_project, args, message):
    result = demo_project.run(*args)
    assert result.returncode == EXIT_ERROR
    lines = result.stderr.splitlines()
    assert lines[0].startswith('error: ') and message in lines[0] and lines[-1].startswith('hint: ')


def test_unknown_target_lists_the_valid_ones(demo_project):
    assert 'valid targets: demo (or all)' in demo_project.run('--target', 'nope').stderr


def test_an_unreadable_lock_is_an_error(demo_project):
    (demo_project.root / 'upstream.lock').write_text('[demo\n')
    result = demo_project.run('--list')
    assert result.returncode == EXIT_ERROR and 'upstream.lock' in result.stderr and 'hint:' in result.stderr


def test_missing_git_is_an_error(demo_project, tmp_path):
    empty = tmp_path / 'empty-path'
    empty.mkdir()
    result = demo_project.run('--list', env={'PATH': str(empty)})
    assert result.returncode == EXIT_ERROR and 'git is not installed' in result.stderr


def test_check_writes_nothing(demo_project, tmp_path):
    result = demo_project.run('--target', 'demo', '--source', demo_project.upstream.path, '--check')
    assert result.returncode == 0, result.stderr
    assert '2 patches apply' in result.stderr
    assert not demo_project.cache.exists() and not (demo_project.root / 'build').exists()
    add_conflicting_patch(demo_project)
    result = demo_project.run('--target', 'demo', '--source', demo_project.upstream.path, '--check')
    assert result.returncode == EXIT_PATCH and '0003-conflict.patch' in result.stderr


def test_list_status_and_diff(demo_project, run_git, tmp_path):
    assert 'demo (Demo-Alias)' in demo_project.run('--list', check_rc=0).stdout.splitlines()[1]
    tree = demo_project.build(tmp_path / 'out' / 'demo')
    listed = demo_project.run('--list', check_rc=0).stdout.splitlines()[1].split()
    assert listed[-2:] == ['2', 'yes']
    status = demo_project.run('--target', 'demo', '--dest', tree, '--status', check_rc=0).stdout
    assert ': up to date' in status and 'pristine' in status and status.count('applied ') == 2
    (tree / 'README.md').write_text('edited\n')
    status = demo_project.run('--target', 'demo', '--dest', tree, '--status', check_rc=0).stdout
    assert ': modified' in status and 'M README.md' in status
    diff = demo_project.run('--target', 'demo', '--dest', tree, '--diff', check_rc=0).stdout
    assert "pkg/mod.py: change 'return 3'" in diff and 'git -C' in diff and 'diff upstream' in diff
    assert 'README.md' in diff and 'file' in diff


def test_offline_never_opens_a_network_connection(demo_project, monkeypatch, tmp_path):
    """In-process with socket entry points trapped: --offline fails cleanly without touching them."""
    apply = demo_project.load_module()
    attempts = []

    def trap(*args, **kwargs):
        attempts.append(args)
        raise OSError('network access attempted in a test')

    for name in ('getaddrinfo', 'create_connection'):
        monkeypatch.setattr(socket, name, trap)
    monkeypatch.setattr(socket.socket, 'connect', trap)
    for variable in ('GANPATCH_MIRROR', 'http_proxy', 'https_proxy', 'HTTP_PROXY', 'HTTPS_PROXY'):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv('GANPATCH_CACHE', str(demo_project.cache))
    assert apply.main(['--target', 'demo', '--offline', '--dest', str(tmp_path / 'd')]) == EXIT_NO_SOURCE
    assert attempts == []
    # The same run without --offline does reach for the network, so the trap above is live.
    assert apply.main(['--target', 'demo', '--dest', str(tmp_path / 'd')]) == EXIT_NO_SOURCE
    assert attempts


def test_no_network_error_names_the_alternatives(demo_project, tmp_path):
    result = demo_project.run('--target', 'demo', '--dest', tmp_path / 'd',
                              env={'https_proxy': 'http://127.0.0.1:9', 'no_proxy': ''})
    assert result.returncode == EXIT_NO_SOURCE
    assert 'cannot download https://github.com/test/demo/archive/' in result.stderr
    assert all(option in result.stderr for option in ('--mirror', '--source', '--offline'))


def test_an_exception_mid_apply_leaves_no_destination(demo_project, monkeypatch, tmp_path):
    apply = demo_project.load_module()
    monkeypatch.setenv('GANPATCH_CACHE', str(demo_project.cache))

    def broken(*args):
        raise RuntimeError('injected')

    monkeypatch.setattr(apply, 'commit_overlays', broken)
    dest = tmp_path / 'out' / 'demo'
    with pytest.raises(RuntimeError, match='injected'):
        apply.main(['--target', 'demo', '--source', str(demo_project.upstream.path), '--dest', str(dest)])
    assert siblings(dest) == []
    assert [path.name for path in (demo_project.cache / 'trees').iterdir()] == [f'{demo_project.upstream.tree}.tar']


def test_an_exception_while_caching_leaves_no_partial_cache_entry(demo_project, monkeypatch, tmp_path):
    apply = demo_project.load_module()
    monkeypatch.setenv('GANPATCH_CACHE', str(demo_project.cache))
    added = []

    def addfile_then_fail(self, *args):
        added.append(args)
        if len(added) == 3:
            raise RuntimeError('injected')
        return original(self, *args)

    original = apply.tarfile.TarFile.addfile
    monkeypatch.setattr(apply.tarfile.TarFile, 'addfile', addfile_then_fail)
    dest = tmp_path / 'out' / 'demo'
    with pytest.raises(RuntimeError, match='injected'):
        apply.main(['--target', 'demo', '--source', str(demo_project.upstream.path), '--dest', str(dest)])
    assert list((demo_project.cache / 'trees').iterdir()) == []
    assert siblings(dest) == []


@pytest.mark.skipif(sys.platform == 'win32', reason='POSIX permissions')
def test_github_download_reads_a_local_archive_through_urllib(demo_project, run_git, monkeypatch, tmp_path):
    """The download path (progress, extraction, verification) on a file:// URL instead of GitHub."""
    apply = demo_project.load_module()
    archive = tmp_path / 'demo.tar.gz'
    upstream = demo_project.upstream
    run_git('archive', '--format=tar.gz', f'--prefix=demo-{upstream.commit}/', '-o', str(archive), upstream.commit,
            cwd=upstream.path)
    real_open = apply.urllib.request.OpenerDirector.open
    requested = []

    def open_local(self, url, *args, **kwargs):
        requested.append(url)
        return real_open(self, archive.as_uri(), *args, **kwargs)

    monkeypatch.setattr(apply.urllib.request.OpenerDirector, 'open', open_local)
    monkeypatch.setenv('GANPATCH_CACHE', str(demo_project.cache))
    monkeypatch.delenv('GANPATCH_MIRROR', raising=False)
    assert apply.main(['--target', 'demo', '--dest', str(tmp_path / 'd')]) == 0
    assert requested == [f'https://github.com/test/demo/archive/{upstream.commit}.tar.gz']
    assert (demo_project.cache / 'trees' / f'{upstream.tree}.tar').is_file()
    shutil.rmtree(tmp_path / 'd')


def test_check_warns_about_a_patch_without_description(demo_project):
    series = demo_project.root / 'patches' / 'demo' / 'series'
    first = next(line for line in series.read_text().splitlines() if not line.startswith('#'))
    patch = demo_project.root / 'patches' / 'demo' / first
    patch.write_text(patch.read_text().replace('Why: a test patch (ours).\n', ''))
    result = demo_project.run('--target', 'demo', '--source', demo_project.upstream.path, '--check', check_rc=0)
    assert f'warning: patches/demo/{first} has no description' in result.stderr


def test_target_all_builds_every_target_under_dest_and_reports_each_failure(demo_project, tmp_path):
    lock = demo_project.root / 'upstream.lock'
    lock.write_text(lock.read_text() + lock.read_text().replace('[demo]', '[second]').replace('Demo-Alias', 'S'))
    (demo_project.root / 'patches' / 'second').mkdir()
    (demo_project.root / 'patches' / 'second' / 'series').write_text('0001-missing.patch\n')
    demo_project.build(tmp_path / 'warm-the-cache')
    result = demo_project.run('--target', 'all', '--offline', '--dest', tmp_path / 'all')
    assert result.returncode == EXIT_ERROR
    assert 'error: second: patches/second/series lists 0001-missing.patch' in result.stderr
    assert (tmp_path / 'all' / 'demo' / 'ganpatch').is_dir() and not (tmp_path / 'all' / 'second').exists()
