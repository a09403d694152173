"""apply.py's sources: pure-Python git tree ids, archive reading, extraction safety, cache and mirror robustness."""
import io
import os
import shutil
import subprocess
import tarfile
import zipfile

import pytest

from ganpatch_apply import archives, cache, fetch, trees
from ganpatch_apply.errors import EXIT_ERROR, EXIT_NO_SOURCE, EXIT_REJECTED, RejectedError
from ganpatch_apply.pins import Source

LINK, FILE = '120000', '100644'


def source_for(upstream, tree=None):
    return Source('demo', 'https://github.com/test/demo', upstream.commit, tree or upstream.tree, 'MIT')


def git_archive(git, upstream, fmt, path):
    git('archive', f'--format={fmt}', f'--prefix=demo-{upstream.commit}/', '-o', str(path), upstream.commit,
        cwd=upstream.path)
    return path


def test_tree_id_of_a_git_source_equals_git_rev_parse(demo_upstream):
    files = archives.read_git(demo_upstream.path, demo_upstream.commit, 'test')
    assert files['tool.sh'].mode == trees.MODE_EXEC
    assert files['link.py'] == trees.Entry(trees.MODE_LINK, b'pkg/mod.py')
    assert trees.tree_id(files) == demo_upstream.tree


@pytest.mark.parametrize('fmt', ['tar.gz', 'zip'])
def test_tree_id_of_an_archive_equals_git_rev_parse(run_git, demo_upstream, tmp_path, fmt):
    archive = git_archive(run_git, demo_upstream, fmt, tmp_path / f'demo.{fmt}')
    files = archives.match_tree(archives.read_archive(archive, 'test'), source_for(demo_upstream), 'test')
    assert trees.tree_id(files) == demo_upstream.tree
    assert files['data.bin'].data == bytes(range(256)) * 4
    assert set(files) == set(archives.read_git(demo_upstream.path, demo_upstream.commit, 'test'))


def test_tree_id_of_a_tar_without_top_directory(demo_upstream):
    files = archives.read_git(demo_upstream.path, demo_upstream.commit, 'test')
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode='w') as archive:
        for name, entry in files.items():
            archive.addfile(*cache.tar_member(name, entry))
    buffer.seek(0)
    assert trees.tree_id(archives.read_tar(buffer, 'test')) == demo_upstream.tree


def test_a_tree_with_one_top_directory_is_not_stripped(demo_upstream):
    nested = {f'only/{path}': entry for path, entry in
              archives.read_git(demo_upstream.path, demo_upstream.commit, 'test').items()}
    source = source_for(demo_upstream, tree=trees.tree_id(nested))
    assert archives.match_tree(nested, source, 'test') == nested


def test_empty_file_and_tree_ids_match_git():
    assert trees.git_object_id('blob', b'').hex() == 'e69de29bb2d1d6434b8b29ae775ad8c2e48c5391'
    assert trees.tree_id({'a': trees.Entry(trees.MODE_FILE, b'')}) == '496d6428b9cf92981dc9495211e6e1120fb6f2ba'


def tar_with(*members):
    """A tar archive of (TarInfo, data) pairs."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode='w') as archive:
        for info, data in members:
            info.size = len(data or b'')
            archive.addfile(info, io.BytesIO(data) if data else None)
    buffer.seek(0)
    return buffer


def member(name, kind=tarfile.REGTYPE, linkname=''):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info


@pytest.mark.parametrize('members, complaint', [
    ([(member('../evil.py'), b'x')], 'unsafe path'),
    ([(member('/etc/evil'), b'x')], 'unsafe path'),
    ([(member('a/../../evil'), b'x')], 'unsafe path'),
    ([(member('fifo', tarfile.FIFOTYPE), None)], 'special file'),
    ([(member('dev', tarfile.CHRTYPE), None)], 'special file'),
    ([(member('hard', tarfile.LNKTYPE, '/etc/passwd'), None)], 'unsafe path'),
    ([(member('hard', tarfile.LNKTYPE, 'not-in-archive'), None)], 'hard link'),
])
def test_unsafe_tar_members_are_refused(members, complaint):
    with pytest.raises(RejectedError, match=complaint):
        archives.read_tar(tar_with(*members), 'evil.tar')


@pytest.mark.parametrize('entries, complaint', [
    ([('link', LINK, b'../../outside')], 'points outside the tree'),
    ([('a/link', LINK, b'../..')], 'points outside the tree'),
    ([('link', LINK, b'/etc/passwd')], 'points outside the tree'),
    ([('link', LINK, b'sub'), ('link/x', FILE, b'')], 'behind the symbolic link'),
    ([('wgan.py', FILE, b''), ('wgan.py/evil.py', FILE, b'')], 'both a file and a folder'),
    ([('.git/config', FILE, b'')], 'inside .git'),
    ([('a//b', FILE, b'')], 'unsafe path'),
])
def test_escaping_links_git_paths_and_file_folder_clashes_are_refused(entries, complaint):
    files = {path: trees.Entry(mode, data) for path, mode, data in entries}
    with pytest.raises(RejectedError, match=complaint):
        archives.match_tree(files, Source('demo', 'https://github.com/t/d', '0' * 40, '0' * 40, 'MIT'), 'evil')


def test_links_inside_the_tree_are_accepted():
    trees.check_safe({'a/link': trees.Entry(trees.MODE_LINK, b'../b'), 'b': trees.Entry(trees.MODE_FILE, b'')}, 'ok')


def test_zip_slip_is_refused(tmp_path):
    path = tmp_path / 'evil.zip'
    with zipfile.ZipFile(path, 'w') as archive:
        archive.writestr('../evil.py', 'x')
    with pytest.raises(RejectedError, match='unsafe path'):
        archives.read_zip(path, 'evil.zip')


def test_a_tar_slip_archive_writes_nothing(demo_project, tmp_path):
    """End to end: the refused archive leaves no cache entry, no destination and no escaped file."""
    archive = tmp_path / 'slip.tar.gz'
    with tarfile.open(archive, 'w:gz') as tar:
        tar.addfile(member('demo/../../escaped.py'), io.BytesIO(b''))
    dest = tmp_path / 'out' / 'demo'
    result = demo_project.run('--target', 'demo', '--source', archive, '--dest', dest)
    assert result.returncode == EXIT_REJECTED, result.stderr
    assert 'unsafe path' in result.stderr
    assert not dest.exists() and not (tmp_path / 'escaped.py').exists() and not demo_project.cache.exists()


def upstream_tar_plus(run_git, upstream, tmp_path, *extra):
    """GitHub-style tar.gz of the upstream with extra (TarInfo, data) members appended."""
    plain = git_archive(run_git, upstream, 'tar', tmp_path / 'plain.tar')
    path = tmp_path / f'demo-{upstream.commit}.tar.gz'
    with tarfile.open(plain) as source, tarfile.open(path, 'w:gz') as target:
        for info in source:
            target.addfile(info, source.extractfile(info) if info.isreg() else None)
        for info, data in extra:
            info.size = len(data or b'')
            target.addfile(info, io.BytesIO(data) if data else None)
    return path


@pytest.mark.parametrize('extra, complaint', [
    ([(member('demo/pkg/mod.py/evil.py'), b'x')], 'both a file and a folder'),
    ([(member('demo/escape', tarfile.SYMTYPE, 'pkg'), None), (member('demo/escape/evil.py'), b'x')],
     'behind the symbolic link'),
])
def test_a_file_and_folder_clash_is_rejected_and_a_good_mirror_still_works(
        run_git, demo_project, demo_upstream, tmp_path, extra, complaint):
    """The hostile archive is refused with exit 4 before any id is computed; nothing is cached, and
    the next run with a good mirror builds."""
    upstream = demo_upstream
    hostile = upstream_tar_plus(run_git, upstream, tmp_path,
                                *[(info.replace(name=info.name.replace('demo/', f'demo-{upstream.commit}/')), data)
                                  for info, data in extra])
    dest = tmp_path / 'out' / 'demo'
    result = demo_project.run('--target', 'demo', '--source', hostile, '--dest', dest)
    assert result.returncode == EXIT_REJECTED, result.stderr
    assert complaint in result.stderr and 'Traceback' not in result.stderr and 'hint:' in result.stderr
    assert not demo_project.cache.exists() and not dest.exists()
    mirror = tmp_path / 'mirror'
    run_git('clone', '-q', '--bare', str(upstream.path), str(mirror / 'demo.git'), cwd=tmp_path)
    demo_project.run('--target', 'demo', '--mirror', mirror, '--dest', dest, '--offline', check_rc=0)


def test_a_tampered_archive_is_rejected_and_nothing_is_cached(run_git, demo_project, demo_upstream, tmp_path):
    plain = git_archive(run_git, demo_upstream, 'tar', tmp_path / 'demo.tar').read_bytes()
    offset = plain.index(b'def f7()')
    tampered = tmp_path / f'demo-{demo_upstream.commit}.tar'
    tampered.write_bytes(plain[:offset] + b'D' + plain[offset + 1:])
    dest = tmp_path / 'out' / 'demo'
    result = demo_project.run('--target', 'demo', '--source', tampered, '--dest', dest)
    assert result.returncode == EXIT_REJECTED, result.stderr
    assert 'does not match the lock' in result.stderr and 'hint:' in result.stderr
    assert not dest.parent.exists()
    assert not demo_project.cache.exists()


def cache_entry(project):
    return project.cache / 'trees' / f'{project.upstream.tree}.tar'


def test_a_corrupt_cache_entry_is_discarded_and_refetched(demo_project, tmp_path):
    demo_project.build(tmp_path / 'first')
    entry = cache_entry(demo_project)
    entry.write_bytes(entry.read_bytes().replace(b'def f7()', b'def F7()'))
    result = demo_project.run('--target', 'demo', '--source', demo_project.upstream.path, '--dest', tmp_path / 'second')
    assert result.returncode == 0, result.stderr
    assert 'discarding the cache entry' in result.stderr
    assert b'def f7()' in entry.read_bytes()


@pytest.mark.parametrize('damage', ['folder', 'file and folder', 'unreadable'])
def test_a_cache_entry_that_is_no_verified_tree_is_discarded_never_fatal(demo_project, tmp_path, damage):
    entry = cache_entry(demo_project)
    entry.parent.mkdir(parents=True)
    if damage == 'folder':
        entry.mkdir()
        (entry / 'inside').write_text('x')
    elif damage == 'file and folder':
        with tarfile.open(entry, 'w') as tar:
            for name in ('wgan.py', 'wgan.py/evil.py'):
                tar.addfile(member(name), io.BytesIO(b''))
    else:
        entry.write_bytes(b'not a tar')
        entry.chmod(0)
    result = demo_project.run('--target', 'demo', '--source', demo_project.upstream.path, '--dest', tmp_path / 'd')
    assert result.returncode == 0, result.stderr
    assert 'warning:' in result.stderr and 'Traceback' not in result.stderr
    result = demo_project.run('--target', 'demo', '--dest', tmp_path / 'again', '--offline')
    assert result.returncode == 0, result.stderr  # the entry was replaced by a verified one


@pytest.mark.skipif(os.geteuid() == 0, reason='root writes into read-only folders')
def test_a_read_only_cache_builds_with_a_warning(demo_project, tmp_path):
    demo_project.cache.mkdir()
    demo_project.cache.chmod(0o555)
    try:
        result = demo_project.run('--target', 'demo', '--source', demo_project.upstream.path, '--dest', tmp_path / 'd')
    finally:
        demo_project.cache.chmod(0o755)
    assert result.returncode == 0, result.stderr
    assert 'warning: cannot write the cache' in result.stderr and 'building without caching' in result.stderr


def test_a_cache_that_refuses_writes_builds_with_a_warning(demo_project, monkeypatch, tmp_path, capsys):
    """The read-only case for a root user (who may write anywhere): the cache's write fails the same way."""
    def refuse(*args, **kwargs):
        raise PermissionError(13, 'Permission denied')

    monkeypatch.setattr(cache.tempfile, 'NamedTemporaryFile', refuse)
    assert demo_project.main('--target', 'demo', '--source', demo_project.upstream.path, '--dest', tmp_path / 'd') == 0
    assert 'warning: cannot write the cache' in capsys.readouterr().err and (tmp_path / 'd' / 'ganpatch').is_dir()


def test_a_cache_that_is_a_file_builds_with_a_warning_and_fetch_says_why_it_fails(demo_project, tmp_path):
    demo_project.cache.write_text('oops, a file')
    result = demo_project.run('--target', 'demo', '--source', demo_project.upstream.path, '--dest', tmp_path / 'd')
    assert result.returncode == 0, result.stderr
    assert 'warning: cannot write the cache' in result.stderr and (tmp_path / 'd' / 'ganpatch').is_dir()
    result = demo_project.run('--target', 'demo', '--source', demo_project.upstream.path, '--fetch')
    assert result.returncode == EXIT_ERROR and 'error: cannot write the cache' in result.stderr
    assert 'hint:' in result.stderr and demo_project.cache.read_text() == 'oops, a file'


def test_a_git_source_with_a_missing_blob_is_rejected(run_git, demo_project, demo_upstream, tmp_path):
    broken = tmp_path / 'broken.git'
    run_git('clone', '-q', '--bare', '--no-local', str(demo_upstream.path), str(broken), cwd=tmp_path)
    run_git('repack', '-a', '-d', '-q', cwd=broken)
    blob = run_git('rev-parse', f'{demo_upstream.commit}:pkg/sub/deep.py', cwd=broken)
    loose = tmp_path / 'loose.git'
    run_git('init', '-q', '--bare', str(loose), cwd=tmp_path)
    objects = run_git('rev-list', '--objects', '--all', cwd=broken).split('\n')
    for line in objects:
        oid = line.split()[0]
        if oid != blob:
            kind = run_git('cat-file', '-t', oid, cwd=broken)
            data = subprocess.run(['git', 'cat-file', kind, oid], cwd=broken, capture_output=True, check=True).stdout
            run_git('hash-object', '-w', '-t', kind, '--stdin', '--literally', cwd=loose, input=data)
    run_git('update-ref', 'refs/heads/master', demo_upstream.commit, cwd=loose)
    result = demo_project.run('--target', 'demo', '--source', loose, '--dest', tmp_path / 'd')
    assert result.returncode == EXIT_REJECTED, result.stderr
    assert f'object {blob} is missing' in result.stderr and 'Traceback' not in result.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason='needs root to give the mirror to another user')
def test_a_mirror_owned_by_another_user_is_read(run_git, demo_project, demo_upstream, tmp_path):
    """git's "dubious ownership" check must not turn a shared mirror into "lacks the commit"."""
    mirror = tmp_path / 'mirror'
    run_git('clone', '-q', '--bare', str(demo_upstream.path), str(mirror / 'test' / 'demo.git'), cwd=tmp_path)
    subprocess.run(['chown', '-R', '12345:12345', str(mirror)], check=True)
    result = demo_project.run('--target', 'demo', '--mirror', mirror, '--offline', '--dest', tmp_path / 'out')
    assert result.returncode == 0, result.stderr


def test_an_unreadable_mirror_reports_gits_own_error(run_git, demo_project, demo_upstream, tmp_path):
    mirror = tmp_path / 'mirror'
    repository = mirror / 'demo.git'
    run_git('clone', '-q', '--bare', str(demo_upstream.path), str(repository), cwd=tmp_path)
    (repository / 'config').write_text('[core]\n\trepositoryformatversion = 99\n')
    result = demo_project.run('--target', 'demo', '--mirror', mirror, '--offline', '--dest', tmp_path / 'out')
    assert result.returncode == EXIT_NO_SOURCE, result.stderr
    assert 'git cannot read it: fatal: Expected git repo version <= 1, found 99' in result.stderr
    assert 'lacks commit' not in result.stderr


def test_mirror_layouts_are_found(run_git, demo_project, demo_upstream, tmp_path):
    mirror = tmp_path / 'mirror'
    run_git('clone', '-q', '--bare', str(demo_upstream.path), str(mirror / 'test' / 'demo.git'), cwd=tmp_path)
    result = demo_project.run('--target', 'demo', '--mirror', mirror, '--offline', '--dest', tmp_path / 'out')
    assert result.returncode == 0, result.stderr
    assert 'test/demo.git' in result.stderr
    candidates = fetch.mirror_candidates(mirror, source_for(demo_upstream))
    assert [path.relative_to(mirror).as_posix() for path in candidates] == ['test/demo.git']


def test_git_configuration_from_the_environment_is_ignored(demo_project, tmp_path):
    """GIT_CONFIG_COUNT/KEY/VALUE (core.autocrlf here) must not make a fresh tree look modified."""
    env = {'GIT_CONFIG_COUNT': '2', 'GIT_CONFIG_KEY_0': 'core.autocrlf', 'GIT_CONFIG_VALUE_0': 'true',
           'GIT_CONFIG_KEY_1': 'core.eol', 'GIT_CONFIG_VALUE_1': 'crlf', 'GIT_DIR': str(tmp_path / 'nowhere')}
    dest = tmp_path / 'd'
    demo_project.run('--target', 'demo', '--source', demo_project.upstream.path, '--dest', dest, env=env, check_rc=0)
    assert b'\r\n' not in (dest / 'README.md').read_bytes()
    status = demo_project.run('--target', 'demo', '--dest', dest, '--status', env=env, check_rc=0).stdout
    assert f'{dest}: up to date\n' in status or ': up to date\n' in status
    assert demo_project.run('--target', 'demo', '--dest', dest, env=env, check_rc=0).stderr.count('up to date') == 1


def test_a_folder_is_not_a_source(demo_project, tmp_path):
    folder = tmp_path / 'plain-folder'
    folder.mkdir()
    result = demo_project.run('--target', 'demo', '--source', folder, '--dest', tmp_path / 'd')
    assert result.returncode == EXIT_ERROR and 'neither a git repository nor an archive' in result.stderr


def test_fetch_fills_the_cache_and_builds_nothing(demo_project, mirror_of, tmp_path):
    mirror = mirror_of((demo_project.upstream, 'test/demo'), (demo_project.authors, 'them/their-code'))
    result = demo_project.run('--target', 'all', '--fetch', '--with-authors', '--mirror', mirror, '--offline')
    assert result.returncode == 0, result.stderr
    cached = sorted(path.name for path in (demo_project.cache / 'trees').iterdir())
    assert cached == sorted([f'{demo_project.upstream.tree}.tar', f'{demo_project.authors.tree}.tar'])
    assert not (demo_project.root / 'build' / 'demo').exists()
    again = demo_project.run('--target', 'demo', '--fetch', '--offline', check_rc=0)
    assert 'already cached' in again.stderr
    shutil.rmtree(demo_project.cache)
    result = demo_project.run('--target', 'demo', '--fetch', '--offline')
    assert result.returncode == EXIT_NO_SOURCE and 'hint:' in result.stderr
