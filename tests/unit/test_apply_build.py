"""apply.py end to end on a small upstream: the built tree, errors, --check, --list, the lock, destinations."""
import os
import socket
import stat
import subprocess

import pytest

from ganpatch_apply import cache, commits
from ganpatch_apply.errors import EXIT_ERROR, EXIT_LOCAL_WORK, EXIT_NO_SOURCE, EXIT_PATCH


def log_subjects(run_git, tree):
    return run_git('log', '--reverse', '--format=%s', cwd=tree).splitlines()


def siblings(dest):
    """The destination's folder, without the lock files apply.py keeps beside trees."""
    if not dest.parent.exists():
        return []
    return sorted(path.name for path in dest.parent.iterdir() if not path.name.endswith('.ganpatch-lock'))


def test_build_makes_upstream_patch_and_overlay_commits(demo_project, run_git, tmp_path):
    tree = demo_project.build(tmp_path / 'build' / 'demo')
    upstream = demo_project.upstream
    assert log_subjects(run_git, tree) == [f'Upstream test/demo@{upstream.commit}', "pkg/mod.py: change 'return 3'",
                                           "README.md: change 'run tool.sh'", 'ganpatch: overlays']
    assert run_git('rev-parse', 'upstream^{tree}', cwd=tree) == upstream.tree
    assert run_git('log', '-1', '--format=%an <%ae> %ad', '--date=iso-strict', 'upstream', cwd=tree) == \
        'ganpatch <ganpatch@localhost> 2000-01-01T00:00:00+00:00'
    assert run_git('log', '-1', '--format=%an <%ae> %ad', '--date=raw', 'HEAD~1', cwd=tree) == \
        'Upstream Author <author@example.com> 946684800 +0000'  # the patch's author and date
    assert 'Why: a test patch (ours).' in run_git('log', '-1', '--format=%b', 'HEAD~1', cwd=tree)
    assert run_git('diff', '--name-only', 'upstream', 'ganpatch-overlays~1', cwd=tree).splitlines() == \
        ['README.md', 'pkg/mod.py']
    assert run_git('status', '--porcelain', cwd=tree) == '' and run_git('branch', '--show-current', cwd=tree) == 'main'
    assert (tree / 'ganpatch' / '__init__.py').is_file() and os.access(tree / 'run_demo.sh', os.X_OK)
    assert os.access(tree / 'tool.sh', os.X_OK) and os.readlink(tree / 'link.py') == 'pkg/mod.py'
    assert (tree / '.git' / 'ganpatch-stamp.json').is_file()
    assert siblings(tree) == ['demo']


def test_the_commits_are_those_git_am_makes(demo_project, run_git, tmp_path):
    """Same ids as `git am --keep-non-patch` with ganpatch's committer: the patch's author, date, message kept."""
    tree = demo_project.build(tmp_path / 'tree')
    replay = tmp_path / 'replay'
    env = {'GIT_COMMITTER_NAME': 'ganpatch', 'GIT_COMMITTER_EMAIL': 'ganpatch@localhost'}
    run_git('init', '-q', str(replay), cwd=tmp_path)
    run_git('fetch', '-q', str(tree), 'upstream', cwd=replay)
    run_git('checkout', '-q', 'FETCH_HEAD', cwd=replay)
    patches = [str(demo_project.root / 'patches' / 'demo' / name) for name in demo_project.series()]
    run_git('am', '-q', '--keep-cr', '--keep-non-patch', *patches, cwd=replay, env=env)
    assert run_git('rev-parse', 'HEAD', cwd=replay) == run_git('rev-parse', 'ganpatch-overlays~1', cwd=tree)


def test_builds_are_reproducible(demo_project, run_git, tmp_path):
    first = demo_project.build(tmp_path / 'a')
    second = demo_project.build(tmp_path / 'b', '--offline')
    assert run_git('rev-parse', 'HEAD', cwd=first) == run_git('rev-parse', 'HEAD', cwd=second)


def test_target_names_are_case_insensitive_with_aliases(demo_project, tmp_path):
    source = demo_project.upstream.path
    result = demo_project.run('--target', 'DEMO-alias', '--source', source, '--dest', tmp_path / 'x')
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize('umask', [0o022, 0o002, 0o077])
def test_the_tree_honours_the_umask(demo_project, tmp_path, umask):
    dest = tmp_path / 'out' / 'demo'
    old = os.umask(umask)
    try:
        assert demo_project.main('--target', 'demo', '--source', demo_project.upstream.path, '--dest', dest) == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE(dest.stat().st_mode) == 0o777 & ~umask
    assert stat.S_IMODE((dest / 'pkg').stat().st_mode) == 0o777 & ~umask


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


def test_a_patch_that_is_already_upstream_says_so(demo_project, patch_factory, tmp_path):
    directory = demo_project.root / 'patches' / 'demo'
    [again] = patch_factory(demo_project.upstream, directory, [('pkg/mod.py', 'return 3\n', 'return 30\n')], start=3)
    with (directory / 'series').open('a') as series:
        series.write(f'{again}\n')
    result = demo_project.run('--target', 'demo', '--source', demo_project.upstream.path, '--check')
    assert result.returncode == EXIT_PATCH and 'applies in reverse, so the upstream already has' in result.stderr


def rework_first_patch_and_add_a_dependent_one(project, make_patches):
    """Patch 1 now makes f3 return 31; a new patch 3, made on the old patch 1, expects `return 30`."""
    directory = project.root / 'patches' / 'demo'
    old_first, second = project.series()
    (directory / old_first).unlink()
    [first] = make_patches(project.upstream, directory, [('pkg/mod.py', 'return 3\n', 'return 31\n')])
    [third] = make_patches(project.upstream, directory, [('pkg/mod.py', 'return 30\n', 'return 300\n')],
                           base_edits=make_patches.edits[:1], start=3)
    (directory / 'series').write_text(f'{first}\n{second}\n{third}\n')


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


def test_an_empty_patch_is_an_error(demo_project, tmp_path):
    first = demo_project.root / 'patches' / 'demo' / demo_project.series()[0]
    first.write_text(first.read_text().split('\n---\n', 1)[0] + '\n---\n')
    result = demo_project.run('--target', 'demo', '--source', demo_project.upstream.path, '--check')
    assert result.returncode == EXIT_PATCH and 'holds no change' in result.stderr and 'hint:' in result.stderr


@pytest.mark.parametrize('args, message', [
    (['--target', 'nope'], "unknown target 'nope'"),
    (['--target', 'all', '--source', '.'], '--source names the upstream of one target'),
    (['--target', 'demo', '--mirror', '/nonexistent'], 'is not a directory'),
    (['--target', 'demo', '--status', '--3way'], 'only apply when building'),
    (['--target', 'demo', '--status', '--with-authors'], '--with-authors only applies'),
])
def test_bad_input_is_one_error_line_and_a_hint(demo_project, args, message):
    result = demo_project.run(*args)
    assert result.returncode == EXIT_ERROR
    lines = result.stderr.splitlines()
    assert lines[0].startswith('error: ') and message in lines[0] and lines[-1].startswith('hint: ')


def test_unknown_target_lists_the_valid_ones(demo_project):
    assert 'valid targets: demo (or all)' in demo_project.run('--target', 'nope').stderr


@pytest.mark.parametrize('lock, message', [
    ('[demo\n', 'cannot read'),
    ('', 'pins no target'),
    ('[demo]\nrepo = "https://github.com/t/d"\n', 'lacks commit, tree, license'),
    ('[demo]\nrepo = "https://gitlab.com/t/d"\ncommit = "{c}"\ntree = "{t}"\nlicense = "x"\n', 'is not https://github'),
    ('[demo]\nrepo = "https://github.com/t/d"\ncommit = "abc"\ntree = "{t}"\nlicense = "x"\n', '40 lowercase hex'),
    ('[demo]\nrepo = "https://github.com/t/d"\ncommit = "{c}"\ntree = "{t}"\nlicense = "x"\nstatus = 3\n',
     'status must be a string'),
    ('[demo]\nrepo = "https://github.com/t/d"\ncommit = "{c}"\ntree = "{t}"\nlicense = "x"\nflavour = "x"\n',
     'unknown keys: flavour'),
    ('[demo]\nrepo = "https://github.com/t/d"\ncommit = "{c}"\ntree = "{t}"\nlicense = "x"\n'
     '[other]\nrepo = "https://github.com/t/o"\ncommit = "{c}"\ntree = "{t}"\nlicense = "x"\naliases = ["DEMO"]\n',
     "name 'DEMO' is already the target 'demo'"),
    ('[demo]\nrepo = "https://github.com/t/d"\ncommit = "{c}"\ntree = "{t}"\nlicense = "x"\naliases = ["x"]\n'
     '[other]\nrepo = "https://github.com/t/o"\ncommit = "{c}"\ntree = "{t}"\nlicense = "x"\naliases = ["X"]\n',
     "name 'X' is already an alias of 'demo'"),
    ('[demo]\nrepo = "https://github.com/t/d"\ncommit = "{c}"\ntree = "{t}"\nlicense = "x"\naliases = ["all"]\n',
     "reserved name 'all'"),
    ('["../up"]\nrepo = "https://github.com/t/d"\ncommit = "{c}"\ntree = "{t}"\nlicense = "x"\n', 'a target name is'),
    ('[demo]\nrepo = "https://github.com/t/d"\ncommit = "{c}"\ntree = "{t}"\nlicense = "x"\n'
     '[demo.authors]\nrepo = "https://github.com/t/a"\ncommit = "{c}"\ntree = "{t}"\nlicense = "x"\n',
     'needs exactly one of patch'),
    ('[demo]\nrepo = "https://github.com/t/d"\ncommit = "{c}"\ntree = "{t}"\nlicense = "x"\n'
     '[demo.authors]\nrepo = "https://github.com/t/a"\ncommit = "{c}"\ntree = "{t}"\nlicense = "x"\n'
     'files = ["../x"]\n', 'must name relative paths'),
])
def test_a_bad_lock_is_an_error_when_it_is_read(demo_project, lock, message):
    (demo_project.root / 'upstream.lock').write_text(lock.format(c='a' * 40, t='b' * 40))
    result = demo_project.run('--list')
    assert result.returncode == EXIT_ERROR, result.stdout
    assert message in result.stderr and 'upstream.lock' in result.stderr and 'hint:' in result.stderr


def test_missing_git_is_an_error(demo_project, tmp_path):
    empty = tmp_path / 'empty-path'
    empty.mkdir()
    result = demo_project.run('--list', env={'PATH': str(empty)})
    assert result.returncode == EXIT_ERROR and 'git is not installed' in result.stderr


def test_check_writes_nothing(demo_project, tmp_path):
    before = sorted(path.relative_to(tmp_path) for path in tmp_path.rglob('*'))
    result = demo_project.run('--target', 'demo', '--source', demo_project.upstream.path, '--check', '--with-authors',
                              '--mirror', demo_project.authors.path.parent)
    assert result.returncode == 0, result.stderr
    assert '2 patches apply' in result.stderr and "the authors' code applies" in result.stderr
    assert sorted(path.relative_to(tmp_path) for path in tmp_path.rglob('*')) == before
    add_conflicting_patch(demo_project)
    result = demo_project.run('--target', 'demo', '--source', demo_project.upstream.path, '--check')
    assert result.returncode == EXIT_PATCH and '0003-conflict.patch' in result.stderr


def test_list_says_which_targets_are_usable(demo_project, tmp_path):
    lines = demo_project.run('--list', check_rc=0).stdout.splitlines()
    assert lines[0].split()[:3] == ['target', 'status', 'patches']
    row = lines[1].split()
    assert row[:4] == ['demo', '(Demo-Alias)', 'usable', '2'] and 'them/their-code@' in lines[1]
    assert 'no' in row and 'yes' not in row
    demo_project.build(tmp_path / 'out')
    assert 'yes' in demo_project.run('--list', check_rc=0).stdout.splitlines()[1].split()


def test_offline_never_opens_a_network_connection(demo_project, monkeypatch, tmp_path):
    """In-process with socket entry points trapped: --offline fails cleanly without touching them."""
    attempts = []

    def trap(*args, **kwargs):
        attempts.append(args)
        raise OSError('network access attempted in a test')

    for name in ('getaddrinfo', 'create_connection'):
        monkeypatch.setattr(socket, name, trap)
    monkeypatch.setattr(socket.socket, 'connect', trap)
    for variable in ('http_proxy', 'https_proxy', 'HTTP_PROXY', 'HTTPS_PROXY'):
        monkeypatch.delenv(variable, raising=False)
    assert demo_project.main('--target', 'demo', '--offline', '--dest', tmp_path / 'd') == EXIT_NO_SOURCE
    assert attempts == [] and not (tmp_path / 'd').exists()
    # The same run without --offline does reach for the network, so the trap above is live.
    assert demo_project.main('--target', 'demo', '--dest', tmp_path / 'd') == EXIT_NO_SOURCE
    assert attempts


def test_no_network_error_names_the_alternatives(demo_project, tmp_path):
    result = demo_project.run('--target', 'demo', '--dest', tmp_path / 'd',
                              env={'https_proxy': 'http://127.0.0.1:9', 'no_proxy': ''})
    assert result.returncode == EXIT_NO_SOURCE
    assert 'cannot download https://github.com/test/demo/archive/' in result.stderr
    assert all(option in result.stderr for option in ('--mirror', '--source', '--offline'))


def test_an_exception_mid_build_leaves_no_destination(demo_project, monkeypatch, tmp_path):
    def broken(*args):
        raise RuntimeError('injected')

    monkeypatch.setattr(commits, 'commit_overlays', broken)
    dest = tmp_path / 'out' / 'demo'
    with pytest.raises(RuntimeError, match='injected'):
        demo_project.main('--target', 'demo', '--source', demo_project.upstream.path, '--dest', dest)
    assert siblings(dest) == []
    assert [path.name for path in (demo_project.cache / 'trees').iterdir()] == [f'{demo_project.upstream.tree}.tar']


def test_an_exception_while_caching_leaves_no_partial_cache_entry(demo_project, monkeypatch, tmp_path):
    added = []

    def addfile_then_fail(self, *args):
        added.append(args)
        if len(added) == 3:
            raise RuntimeError('injected')
        return original(self, *args)

    original = cache.tarfile.TarFile.addfile
    monkeypatch.setattr(cache.tarfile.TarFile, 'addfile', addfile_then_fail)
    dest = tmp_path / 'out' / 'demo'
    with pytest.raises(RuntimeError, match='injected'):
        demo_project.main('--target', 'demo', '--source', demo_project.upstream.path, '--dest', dest)
    assert list((demo_project.cache / 'trees').iterdir()) == []
    assert not dest.exists()


def test_github_download_reads_a_local_archive_through_urllib(demo_project, run_git, monkeypatch, tmp_path):
    """The download path (progress, extraction, verification) on a file:// URL instead of GitHub."""
    from ganpatch_apply import fetch
    archive = tmp_path / 'demo.tar.gz'
    upstream = demo_project.upstream
    run_git('archive', '--format=tar.gz', f'--prefix=demo-{upstream.commit}/', '-o', str(archive), upstream.commit,
            cwd=upstream.path)
    real_open = fetch.urllib.request.OpenerDirector.open
    requested = []

    def open_local(self, url, *args, **kwargs):
        requested.append(url)
        return real_open(self, archive.as_uri(), *args, **kwargs)

    monkeypatch.setattr(fetch.urllib.request.OpenerDirector, 'open', open_local)
    assert demo_project.main('--target', 'demo', '--dest', tmp_path / 'd') == 0
    assert requested == [f'https://github.com/test/demo/archive/{upstream.commit}.tar.gz']
    assert (demo_project.cache / 'trees' / f'{upstream.tree}.tar').is_file()


def test_check_warns_about_a_patch_without_description(demo_project):
    first = demo_project.series()[0]
    patch = demo_project.root / 'patches' / 'demo' / first
    patch.write_text(patch.read_text().replace('Why: a test patch (ours).\n', ''))
    result = demo_project.run('--target', 'demo', '--source', demo_project.upstream.path, '--check', check_rc=0)
    assert f'warning: patches/demo/{first} has no description' in result.stderr


def test_target_all_builds_every_target_under_dest_and_reports_each_failure(demo_project, tmp_path, lock_text):
    lock = demo_project.root / 'upstream.lock'
    second = lock_text(demo_project.upstream).replace('[demo]', '[second]').replace('Demo-Alias', 'S')
    lock.write_text(lock.read_text() + '\n' + second)
    (demo_project.root / 'patches' / 'second').mkdir()
    (demo_project.root / 'patches' / 'second' / 'series').write_text('0001-missing.patch\n')
    demo_project.build(tmp_path / 'warm-the-cache')
    result = demo_project.run('--target', 'all', '--offline', '--dest', tmp_path / 'all')
    assert result.returncode == EXIT_ERROR
    assert 'error: second: patches/second/series lists 0001-missing.patch' in result.stderr
    assert (tmp_path / 'all' / 'demo' / 'ganpatch').is_dir() and not (tmp_path / 'all' / 'second').exists()


# ------------------------------------------------------------------------------------------------
# Odd destinations.

def test_a_dangling_symlink_destination_is_refused(demo_project, tmp_path):
    dest = tmp_path / 'link'
    dest.symlink_to(tmp_path / 'missing-target')
    result = demo_project.run('--target', 'demo', '--source', demo_project.upstream.path, '--dest', dest)
    assert result.returncode == EXIT_ERROR and 'symbolic link' in result.stderr and 'hint:' in result.stderr
    assert not (tmp_path / 'missing-target').exists() and dest.is_symlink()


def test_a_symlink_to_an_empty_folder_builds_there_and_stays_a_link(demo_project, run_git, tmp_path):
    real = tmp_path / 'real'
    real.mkdir()
    dest = tmp_path / 'link'
    dest.symlink_to(real)
    demo_project.build(dest)
    assert dest.is_symlink() and (real / 'ganpatch').is_dir()
    demo_project.edit_overlay()  # outdated: updated in place, through the link
    result = demo_project.run('--target', 'demo', '--dest', dest, '--offline', check_rc=0)
    assert 'updated in place' in result.stderr and dest.is_symlink() and 'v2' in (real / 'run_demo.sh').read_text()
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith('.')) == \
        sorted(['cache', 'link', 'project', 'real'])


def test_dot_builds_into_an_empty_current_folder(demo_project, tmp_path):
    here = tmp_path / 'here'
    here.mkdir()
    result = demo_project.run('--target', 'demo', '--source', demo_project.upstream.path, '--dest', '.', cwd=here)
    assert result.returncode == 0, result.stderr
    assert (here / 'ganpatch').is_dir() and (here / '.git').is_dir()


@pytest.mark.parametrize('dest', ['.', 'x/..', '..'])
def test_the_checkout_itself_or_a_folder_above_it_is_refused(demo_project, dest):
    (demo_project.root / 'x').mkdir()
    result = demo_project.run('--target', 'demo', '--source', demo_project.upstream.path, '--dest', dest)
    assert result.returncode == EXIT_ERROR and 'the ganpatch checkout' in result.stderr and 'hint:' in result.stderr
    assert not (demo_project.root / '.git').exists()


def test_a_folder_that_is_not_a_ganpatch_tree_is_refused_and_force_moves_it(demo_project, tmp_path):
    dest = tmp_path / 'out' / 'demo'
    dest.mkdir(parents=True)
    (dest / 'thesis.tex').write_text('precious')
    result = demo_project.run('--target', 'demo', '--source', demo_project.upstream.path, '--dest', dest)
    assert result.returncode == EXIT_LOCAL_WORK and 'not a ganpatch tree' in result.stderr and 'hint:' in result.stderr
    assert (dest / 'thesis.tex').read_text() == 'precious' and not (dest / '.git').exists()
    result = demo_project.run('--target', 'demo', '--source', demo_project.upstream.path, '--dest', dest, '--force')
    assert result.returncode == 0, result.stderr
    [backup] = [dest.parent / name for name in siblings(dest) if name.startswith('demo.backup-')]
    assert (backup / 'thesis.tex').read_text() == 'precious' and (dest / 'ganpatch').is_dir()


def test_a_file_destination_is_refused(demo_project, tmp_path):
    dest = tmp_path / 'file'
    dest.write_text('x')
    result = demo_project.run('--target', 'demo', '--source', demo_project.upstream.path, '--dest', dest)
    assert result.returncode == EXIT_ERROR and 'is not a folder' in result.stderr and dest.read_text() == 'x'


def test_a_second_apply_waits_for_the_first(demo_project, tmp_path):
    """The lock: while one apply.py holds a destination, another one waits, saying so, then finds it up to date."""
    from ganpatch_apply import locking
    dest = tmp_path / 'out' / 'demo'
    demo_project.build(dest)
    demo_project.edit_overlay()
    with locking.destination(dest.resolve(), 'held by the test'):
        waiting = subprocess.Popen([os.sys.executable, str(demo_project.root / 'apply.py'), '--target', 'demo',
                                    '--dest', str(dest), '--offline'], env=demo_project.env(),
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        status = demo_project.run('--target', 'demo', '--dest', dest, '--status', check_rc=0).stdout
        with pytest.raises(subprocess.TimeoutExpired):
            waiting.wait(timeout=1.5)
    _, stderr = waiting.communicate(timeout=60)
    assert waiting.returncode == 0 and 'waiting for another apply.py' in stderr and 'updated in place' in stderr
    assert 'busy: another apply.py' in status


def test_force_on_a_foreign_folder_refuses_to_move_the_current_folder(demo_project, tmp_path):
    dest = tmp_path / 'mine'
    dest.mkdir()
    (dest / 'notes.txt').write_text('x')
    result = demo_project.run('--target', 'demo', '--source', demo_project.upstream.path, '--dest', '.', '--force',
                              cwd=dest)
    assert result.returncode == EXIT_ERROR and 'the folder you are in' in result.stderr
    assert (dest / 'notes.txt').exists()

