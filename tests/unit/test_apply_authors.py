"""--with-authors: branch `authors` = the upstream commit + the original authors' change, pinned like an upstream."""
import pytest

from ganpatch_apply.errors import EXIT_ERROR, EXIT_LOCAL_WORK, EXIT_NO_SOURCE, EXIT_PATCH


@pytest.fixture
def mirror(demo_project, mirror_of):
    """A mirror holding the upstream and the authors' repository (the layout of --mirror)."""
    return mirror_of((demo_project.upstream, 'test/demo'), (demo_project.authors, 'them/their-code'))


def build_with_authors(project, dest, mirror, *args):
    return project.run('--target', 'demo', '--dest', dest, '--mirror', mirror, '--offline', '--with-authors', *args)


def test_the_authors_branch_holds_their_patch_on_the_upstream(demo_project, run_git, mirror, tmp_path):
    tree = tmp_path / 'demo'
    result = build_with_authors(demo_project, tree, mirror)
    assert result.returncode == 0, result.stderr
    assert run_git('rev-parse', 'authors^', cwd=tree) == run_git('rev-parse', 'upstream', cwd=tree)
    assert run_git('diff', '--name-only', 'upstream', 'authors', cwd=tree) == 'pkg/mod.py'
    assert 'return 7 * CLIP \n' in run_git('show', 'authors:pkg/mod.py', cwd=tree) + '\n'  # trailing space kept
    message = run_git('log', '-1', '--format=%an <%ae> %ad%n%B', '--date=raw', 'authors', cwd=tree)
    assert message.startswith('ganpatch <ganpatch@localhost> 946684800 +0000\nAuthors\' code: them/their-code@')
    assert 'their.patch of them/their-code@' in message and 'git diff authors HEAD' in message
    diff = run_git('diff', '--stat', 'authors', 'HEAD', cwd=tree)
    assert 'pkg/mod.py' in diff and 'README.md' in diff and 'ganpatch/__init__.py' in diff
    assert run_git('branch', '--show-current', cwd=tree) == 'main'
    again = tmp_path / 'again'
    build_with_authors(demo_project, again, mirror)
    assert run_git('rev-parse', 'authors', cwd=again) == run_git('rev-parse', 'authors', cwd=tree)
    assert sorted(path.name for path in (demo_project.cache / 'trees').iterdir()) == \
        sorted([f'{demo_project.upstream.tree}.tar', f'{demo_project.authors.tree}.tar'])


def test_the_authors_files_replace_the_upstreams(demo_project, run_git, mirror, tmp_path, lock_text):
    (demo_project.root / 'upstream.lock').write_text(
        lock_text(demo_project.upstream, demo_project.authors, change='files = ["pkg/sub/deep.py"]'))
    tree = tmp_path / 'demo'
    assert build_with_authors(demo_project, tree, mirror).returncode == 0
    assert run_git('diff', '--name-only', 'upstream', 'authors', cwd=tree) == 'pkg/sub/deep.py'
    assert run_git('show', 'authors:pkg/sub/deep.py', cwd=tree) == 'VALUE = 2  # theirs'
    status = demo_project.run('--target', 'demo', '--dest', tree, '--status', check_rc=0).stdout
    assert 'authors: branch authors = upstream + pkg/sub/deep.py taken from them/their-code@' in status
    assert status.rstrip().endswith(': up to date') or ': up to date' in status


def test_without_the_option_nothing_changes(demo_project, run_git, tmp_path):
    tree = demo_project.build(tmp_path / 'demo')
    assert run_git('branch', '--list', 'authors', cwd=tree) == ''
    assert '"authors"' not in (tree / '.git' / 'ganpatch-stamp.json').read_text()
    assert not (demo_project.cache / 'trees' / f'{demo_project.authors.tree}.tar').exists()
    diff = demo_project.run('--target', 'demo', '--dest', tree, '--diff', check_rc=0).stdout
    assert '--with-authors' in diff and 'against the original authors' not in diff


def test_with_authors_on_an_up_to_date_tree_only_adds_the_branch(demo_project, run_git, mirror, tmp_path):
    tree = demo_project.build(tmp_path / 'demo')
    (tree / 'notes.txt').write_text('mine\n')
    (tree / 'README.md').write_text('edited\n')
    head = run_git('rev-parse', 'HEAD', cwd=tree)
    result = build_with_authors(demo_project, tree, mirror)
    assert result.returncode == 0, result.stderr
    assert 'up to date' in result.stderr and 'branch authors' in result.stderr
    assert run_git('rev-parse', 'HEAD', cwd=tree) == head and (tree / 'README.md').read_text() == 'edited\n'
    assert run_git('rev-parse', 'authors^', cwd=tree) == run_git('rev-parse', 'upstream', cwd=tree)
    status = demo_project.run('--target', 'demo', '--dest', tree, '--status', check_rc=0).stdout
    assert 'their.patch of them/their-code@' in status and ': up to date' in status.split('authors:')[1]


def test_diff_summarises_the_difference_to_the_authors(demo_project, mirror, tmp_path):
    tree = tmp_path / 'demo'
    build_with_authors(demo_project, tree, mirror)
    diff = demo_project.run('--target', 'demo', '--dest', tree, '--diff', check_rc=0).stdout
    part = diff.split("ganpatch against the original authors' code", 1)[1]
    assert 'files differ' in part and 'pkg/mod.py' in part and f'git -C {tree} diff authors HEAD' in part


def test_a_stale_authors_branch_is_reported_and_moved_keeping_the_users_commits(demo_project, run_git, mirror,
                                                                               tmp_path, lock_text):
    tree = tmp_path / 'demo'
    build_with_authors(demo_project, tree, mirror)
    run_git('checkout', '-q', 'authors', cwd=tree)
    (tree / 'trial.py').write_text('x\n')
    run_git('add', 'trial.py', cwd=tree)
    run_git('commit', '-qm', 'a trial on their code', cwd=tree)
    mine = run_git('rev-parse', 'HEAD', cwd=tree)
    (demo_project.root / 'upstream.lock').write_text(
        lock_text(demo_project.upstream, demo_project.authors, change='files = ["pkg/sub/deep.py"]'))
    status = demo_project.run('--target', 'demo', '--dest', tree, '--status', check_rc=0).stdout
    assert 'stale (rerun with --with-authors)' in status
    result = build_with_authors(demo_project, tree, mirror)
    assert result.returncode == EXIT_LOCAL_WORK and 'branch authors is checked out' in result.stderr
    run_git('checkout', '-q', 'main', cwd=tree)
    build_with_authors(demo_project, tree, mirror).check_returncode()
    [kept] = run_git('for-each-ref', '--format=%(refname) %(objectname)', 'refs/ganpatch/previous',
                     cwd=tree).splitlines()
    assert kept.endswith(f'-authors {mine}')
    assert run_git('diff', '--name-only', 'upstream', 'authors', cwd=tree) == 'pkg/sub/deep.py'


def test_an_update_rebuilds_the_authors_branch_with_the_option(demo_project, run_git, mirror, tmp_path):
    tree = tmp_path / 'demo'
    build_with_authors(demo_project, tree, mirror)
    authors = run_git('rev-parse', 'authors', cwd=tree)
    demo_project.edit_overlay()
    result = demo_project.run('--target', 'demo', '--dest', tree, '--offline')  # without the option: left alone
    assert result.returncode == 0 and run_git('rev-parse', 'authors', cwd=tree) == authors
    demo_project.edit_overlay('#!/bin/sh\necho v3\n')
    build_with_authors(demo_project, tree, mirror).check_returncode()
    assert run_git('rev-parse', 'authors', cwd=tree) == authors  # same upstream, same change: same commit
    assert run_git('for-each-ref', 'refs/ganpatch/previous/*-authors', cwd=tree) == ''


def test_a_target_without_authors_code_says_so(demo_project, tmp_path, lock_text):
    (demo_project.root / 'upstream.lock').write_text(lock_text(demo_project.upstream))
    result = demo_project.run('--target', 'demo', '--source', demo_project.upstream.path, '--dest', tmp_path / 'd',
                              '--with-authors')
    assert result.returncode == EXIT_ERROR and "pins no authors' code for demo" in result.stderr
    assert 'hint:' in result.stderr and not (tmp_path / 'd').exists()
    result = demo_project.run('--target', 'all', '--source', demo_project.upstream.path, '--dest', tmp_path / 'd',
                              '--with-authors')
    assert result.returncode == EXIT_ERROR  # --source with all
    demo_project.build(tmp_path / 'warm')
    result = demo_project.run('--target', 'all', '--offline', '--dest', tmp_path / 'all', '--with-authors')
    assert result.returncode == 0 and "no authors' code is pinned for it" in result.stderr
    status = demo_project.run('--target', 'demo', '--dest', tmp_path / 'warm', '--status', check_rc=0).stdout
    assert 'authors: none pinned for demo' in status


def test_their_patch_must_apply_at_zero_fuzz(demo_project, run_git, tmp_path, lock_text):
    their = tmp_path / 'their-code'
    run_git('clone', '-q', str(demo_project.authors.path), str(their), cwd=tmp_path)
    (their / 'their.patch').write_text((their / 'their.patch').read_text().replace('return 7', 'return 77', 1))
    run_git('commit', '-qam', 'a patch against another base', cwd=their)
    moved = type(demo_project.authors)(their, run_git('rev-parse', 'HEAD', cwd=their),
                                       run_git('rev-parse', 'HEAD^{tree}', cwd=their))
    (demo_project.root / 'upstream.lock').write_text(lock_text(demo_project.upstream, moved))
    mirror = tmp_path / 'mirror-2'
    run_git('clone', '-q', '--bare', str(demo_project.upstream.path), str(mirror / 'demo.git'), cwd=tmp_path)
    run_git('clone', '-q', '--bare', str(their), str(mirror / 'their-code.git'), cwd=tmp_path)
    result = demo_project.run('--target', 'demo', '--mirror', mirror, '--offline', '--check', '--with-authors')
    assert result.returncode == EXIT_PATCH
    assert "the authors' patch their.patch does not apply: pkg/mod.py" in result.stderr


def test_the_authors_code_needs_a_source(demo_project, tmp_path):
    demo_project.build(tmp_path / 'demo')
    result = demo_project.run('--target', 'demo', '--dest', tmp_path / 'demo', '--offline', '--with-authors')
    assert result.returncode == EXIT_NO_SOURCE
    assert "no cached or mirrored copy of demo authors' code (them/their-code@" in result.stderr
