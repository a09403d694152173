"""apply.py's sources: pure-Python git tree ids, archive reading and extraction safety."""
import io
import tarfile
import zipfile

import pytest

LINK, FILE = '120000', '100644'


@pytest.fixture
def apply(apply_module):
    return apply_module


def pin_for(apply, upstream, tree=None):
    return apply.Pin('demo', 'https://github.com/test/demo', upstream.commit, tree or upstream.tree, 'MIT')


def git_archive(git, upstream, fmt, path):
    git('archive', f'--format={fmt}', f'--prefix=demo-{upstream.commit}/', '-o', str(path), upstream.commit,
        cwd=upstream.path)
    return path


def test_tree_id_of_a_git_source_equals_git_rev_parse(apply, demo_upstream):
    files = apply.read_git(demo_upstream.path, demo_upstream.commit, 'test')
    assert files['tool.sh'].mode == apply.MODE_EXEC
    assert files['link.py'] == apply.Entry(apply.MODE_LINK, b'pkg/mod.py')
    assert apply.tree_id(files) == demo_upstream.tree


@pytest.mark.parametrize('fmt', ['tar.gz', 'zip'])
def test_tree_id_of_an_archive_equals_git_rev_parse(apply, run_git, demo_upstream, tmp_path, fmt):
    archive = git_archive(run_git, demo_upstream, fmt, tmp_path / f'demo.{fmt}')
    files = apply.match_tree(apply.read_archive(archive, 'test'), pin_for(apply, demo_upstream), 'test')
    assert apply.tree_id(files) == demo_upstream.tree
    assert files['data.bin'].data == bytes(range(256)) * 4
    assert set(files) == set(apply.read_git(demo_upstream.path, demo_upstream.commit, 'test'))


def test_tree_id_of_a_tar_without_top_directory(apply, demo_upstream):
    files = apply.read_git(demo_upstream.path, demo_upstream.commit, 'test')
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode='w') as archive:
        for name, entry in files.items():
            archive.addfile(*apply._tar_member(name, entry))
    buffer.seek(0)
    assert apply.tree_id(apply.read_tar(buffer, 'test')) == demo_upstream.tree


def test_a_tree_with_one_top_directory_is_not_stripped(apply, demo_upstream):
    nested = {f'only/{path}': entry for path, entry in
              apply.read_git(demo_upstream.path, demo_upstream.commit, 'test').items()}
    pin = pin_for(apply, demo_upstream, tree=apply.tree_id(nested))
    assert apply.match_tree(nested, pin, 'test') == nested


def test_empty_file_and_tree_ids_match_git(apply):
    assert apply.git_object_id('blob', b'').hex() == 'e69de29bb2d1d6434b8b29ae775ad8c2e48c5391'
    assert apply.tree_id({'a': apply.Entry(apply.MODE_FILE, b'')}) == '496d6428b9cf92981dc9495211e6e1120fb6f2ba'


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
def test_unsafe_tar_members_are_refused(apply, members, complaint):
    with pytest.raises(apply.RejectedError, match=complaint):
        apply.read_tar(tar_with(*members), 'evil.tar')


@pytest.mark.parametrize('entries, complaint', [
    ([('link', LINK, b'../../outside')], 'points outside the tree'),
    ([('a/link', LINK, b'../..')], 'points outside the tree'),
    ([('link', LINK, b'/etc/passwd')], 'points outside the tree'),
    ([('link', LINK, b'sub'), ('link/x', FILE, b'')], 'behind a symbolic'),
    ([('.git/config', FILE, b'')], 'inside .git'),
])
def test_escaping_links_and_git_paths_are_refused(apply, entries, complaint):
    files = {path: apply.Entry(mode, data) for path, mode, data in entries}
    with pytest.raises(apply.RejectedError, match=complaint):
        apply.check_safe(files, 'evil')


def test_links_inside_the_tree_are_accepted(apply):
    apply.check_safe({'a/link': apply.Entry(apply.MODE_LINK, b'../b'), 'b': apply.Entry(apply.MODE_FILE, b'')}, 'ok')


def test_zip_slip_is_refused(apply, tmp_path):
    path = tmp_path / 'evil.zip'
    with zipfile.ZipFile(path, 'w') as archive:
        archive.writestr('../evil.py', 'x')
    with pytest.raises(apply.RejectedError, match='unsafe path'):
        apply.read_zip(path, 'evil.zip')


def test_a_tar_slip_archive_writes_nothing(apply, demo_project, tmp_path):
    """End to end: the refused archive leaves no cache entry, no destination and no escaped file."""
    archive = tmp_path / 'slip.tar.gz'
    with tarfile.open(archive, 'w:gz') as tar:
        tar.addfile(member('demo/../../escaped.py'), io.BytesIO(b''))
    dest = tmp_path / 'out' / 'demo'
    result = demo_project.run('--target', 'demo', '--source', archive, '--dest', dest)
    assert result.returncode == apply.EXIT_REJECTED, result.stderr
    assert 'unsafe path' in result.stderr
    assert not dest.exists() and not (tmp_path / 'escaped.py').exists() and not demo_project.cache.exists()


def test_a_tampered_archive_is_rejected_and_nothing_is_cached(apply, run_git, demo_project, demo_upstream, tmp_path):
    plain = git_archive(run_git, demo_upstream, 'tar', tmp_path / 'demo.tar').read_bytes()
    offset = plain.index(b'def f7()')
    tampered = tmp_path / f'demo-{demo_upstream.commit}.tar'
    tampered.write_bytes(plain[:offset] + b'D' + plain[offset + 1:])
    dest = tmp_path / 'out' / 'demo'
    result = demo_project.run('--target', 'demo', '--source', tampered, '--dest', dest)
    assert result.returncode == apply.EXIT_REJECTED, result.stderr
    assert 'does not match the lock' in result.stderr and 'hint:' in result.stderr
    assert not dest.parent.exists()
    assert not demo_project.cache.exists()


def test_a_corrupt_cache_entry_is_discarded_and_refetched(demo_project, tmp_path):
    demo_project.build(tmp_path / 'first')
    [entry] = (demo_project.cache / 'trees').iterdir()
    entry.write_bytes(entry.read_bytes().replace(b'def f7()', b'def F7()'))
    result = demo_project.run('--target', 'demo', '--source', demo_project.upstream.path, '--dest', tmp_path / 'second')
    assert result.returncode == 0, result.stderr
    assert 'discarding the cache entry' in result.stderr
    assert b'def f7()' in entry.read_bytes()


def test_mirror_layouts_are_found(apply, run_git, demo_project, demo_upstream, tmp_path):
    mirror = tmp_path / 'mirror'
    run_git('clone', '-q', '--bare', str(demo_upstream.path), str(mirror / 'test' / 'demo.git'), cwd=tmp_path)
    result = demo_project.run('--target', 'demo', '--mirror', mirror, '--offline', '--dest', tmp_path / 'out')
    assert result.returncode == 0, result.stderr
    assert 'test/demo.git' in result.stderr
    candidates = apply.mirror_candidates(mirror, pin_for(apply, demo_upstream))
    names = [path.relative_to(mirror).as_posix() for path in candidates]
    assert names == ['test/demo.git']
