"""--check (build in a scratch repository, write nothing) and --fetch (fill the cache, build nothing)."""
from __future__ import annotations

import tempfile
from pathlib import Path

from .authors import build_authors_commit
from .commits import build_commits
from .errors import EXIT_OK, log
from .fetch import Sources, fetch
from .git import Repo, run_git
from .inputs import Project, read_inputs
from .pins import Pin
from .sourcing import Lazy


def check_target(project: Project, pin: Pin, sources: Sources, *, with_authors: bool) -> int:
    """Fetch, verify and build in a temporary repository; nothing is written anywhere else, not even the cache."""
    inputs = read_inputs(project, pin)
    upstream = Lazy(pin.upstream, sources, fill_cache=False)
    with tempfile.TemporaryDirectory(prefix='ganpatch-check-') as scratch:
        run_git(['init', '-q', '--bare', scratch], cwd=Path(scratch))
        repo = Repo(Path(scratch))
        built = build_commits(repo, inputs, upstream)
        if with_authors:
            build_authors_commit(repo, pin, built.upstream, Lazy(pin.authors.source, sources.without_source(),
                                                                 fill_cache=False))
    for patch in inputs.patches:
        if not patch_description(patch):
            log(f'warning: {project.relative(patch)} has no description (say why, and where it comes from: '
                'ours, or a backport naming the upstream commit, issue or PR)')
    authors = ", the authors' code applies at zero fuzz" if with_authors else ''
    log(f'{pin.target}: ok: tree {pin.upstream.tree[:12]} verified, {len(inputs.patches)} patches apply at zero fuzz, '
        f'{len(inputs.overlays)} overlay files{authors}')
    return EXIT_OK


def patch_description(patch: Path) -> str:
    """The body of a format-patch mail: between the headers and the `---` line."""
    text = patch.read_text(encoding='utf-8', errors='replace')
    body = text.split('\n\n', 1)[1] if '\n\n' in text else ''
    return ('\n' + body).split('\n---\n', 1)[0].strip()


def fetch_target(pin: Pin, sources: Sources, *, with_authors: bool) -> int:
    """Fetch and verify the target's upstream (and with --with-authors the authors' code) into the cache."""
    wanted = [(pin.upstream, sources)]
    if with_authors and pin.authors is not None:
        wanted.append((pin.authors.source, sources.without_source()))
    for source, where in wanted:
        _, origin = fetch(source, where, require_cache=True)
        done = 'already cached' if origin == 'cache' else f'fetched from {origin} into the cache'
        log(f'{source.label}: {source.slug}@{source.commit[:12]} {done} (tree {source.tree[:12]} verified)')
    if with_authors and pin.authors is None:
        log(f'{pin.target}: no authors\' code is pinned for it (nothing more to fetch)')
    return EXIT_OK
