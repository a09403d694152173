"""apply.py --refresh: tree edits back into patches/ and overlays/, byte-stable."""
import os
import subprocess

EXIT_ERROR, EXIT_PATCH = 1, 5


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


def test_refresh_of_an_unedited_tree_changes_no_byte(demo_project, tmp_path):
    tree = demo_project.build(tmp_path / 'out' / 'demo')
    before = demo_project.snapshot()
    result = refresh(demo_project, tree)
    assert result.returncode == 0, result.stderr
    assert 'no files changed' in result.stdout and demo_project.snapshot() == before


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

    result = refresh(demo_project, tree)
    assert result.returncode == 0 and 'no files changed' in result.stdout, result.stderr + result.stdout
    assert demo_project.snapshot() == first

    fresh = demo_project.build(tmp_path / 'fresh' / 'demo', '--offline')
    for path in ('pkg/mod.py', 'pkg/sub/deep.py', 'ganpatch/__init__.py', 'ganpatch/extra.py'):
        assert (fresh / path).read_bytes() == (tree / path).read_bytes(), path
    assert run_git('log', '-1', '--format=%s', 'ganpatch-overlays~1', cwd=fresh) == 'deep: VALUE is 2'

    result = demo_project.run('--target', 'demo', '--dest', tree, '--offline')  # exported work is not lost work
    assert result.returncode == 0 and 'built' in result.stderr, result.stderr


def test_refresh_refuses_uncommitted_upstream_edits(demo_project, tmp_path):
    tree = demo_project.build(tmp_path / 'out' / 'demo')
    (tree / 'README.md').write_text('edited but not committed\n')
    before = demo_project.snapshot()
    result = refresh(demo_project, tree)
    assert result.returncode == EXIT_ERROR and 'M README.md' in result.stderr and 'commit them' in result.stderr
    assert demo_project.snapshot() == before


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
    patch = demo_project.root / 'patches' / 'demo' / read_first(series)
    patch.write_bytes(patch.read_bytes().replace(b'Why: a test patch', b'Why: a reworded test patch'))
    result = refresh(demo_project, tree)
    assert result.returncode == EXIT_ERROR and 'changed since' in result.stderr and '--force' in result.stderr
    assert b'reworded' in patch.read_bytes()
    assert refresh(demo_project, tree, '--force').returncode == 0 and b'reworded' not in patch.read_bytes()


def read_first(series):
    return next(line for line in series.read_text().splitlines() if not line.startswith('#'))


def test_refresh_refuses_overlays_edited_in_both_places(demo_project, tmp_path):
    tree = demo_project.build(tmp_path / 'out' / 'demo')
    (tree / 'ganpatch' / '__init__.py').write_text('tree version\n')
    source = demo_project.root / 'overlays' / 'common' / 'ganpatch' / '__init__.py'
    source.write_text('repository version\n')
    result = refresh(demo_project, tree)
    assert result.returncode == EXIT_ERROR and 'ganpatch/__init__.py' in result.stderr
    assert source.read_text() == 'repository version\n'


def test_three_way_resolution_is_exported_by_refresh(demo_project, patch_factory, run_git, tmp_path):
    """The maintainer loop: --3way, resolve the markers, git am --continue, --refresh, rebuild."""
    dest = demo_project.build(tmp_path / 'out' / 'demo')
    directory = demo_project.root / 'patches' / 'demo'
    [third] = patch_factory(demo_project.upstream, directory, [('pkg/mod.py', 'return 30\n', 'return 300\n')],
                            base_edits=patch_factory.edits[:1], start=3)
    first = read_first(directory / 'series')
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
