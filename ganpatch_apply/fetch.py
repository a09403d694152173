"""Getting a pinned tree: the cache, `--source`, the mirror, GitHub; always verified.

Sources are tried in this order:

1. the cache (`cache.py`), re-verified on every read;
2. `--source PATH` (the target's upstream only): a git repository holding the commit, or a
   `.tar.gz`/`.tgz`/`.tar`/`.zip`;
3. `--mirror DIR` or `$GANPATCH_MIRROR`: `DIR/<repo>[.git]`, `DIR/<owner>/<repo>[.git]` (git
   repositories) or `DIR/<repo>-<commit>.tar.gz`/`.zip`;
4. GitHub's archive of the commit over HTTPS (stdlib, proxy variables honoured); `--offline`
   forbids this step.

Whatever the source, its tree id is recomputed (`archives.match_tree`); a mismatch is an error and
nothing is cached or written.
"""
from __future__ import annotations

import dataclasses
import io
import time
import urllib.error
import urllib.request
from pathlib import Path

from .archives import UnreadableSource, match_tree, read_source, read_tar
from .cache import cache_dir, read_cache, write_cache
from .errors import GanpatchError, NoSourceError, log
from .pins import Source
from .trees import Files


@dataclasses.dataclass(frozen=True)
class Sources:
    source: Path | None  # --source: the target's upstream
    mirror: Path | None
    offline: bool

    def without_source(self) -> Sources:
        return dataclasses.replace(self, source=None)


def mirror_candidates(mirror: Path, source: Source) -> list[Path]:
    names = [source.name, f'{source.name}.git', f'{source.owner}/{source.name}', f'{source.owner}/{source.name}.git',
             f'{source.name}-{source.commit}.tar.gz', f'{source.name}-{source.commit}.tgz',
             f'{source.name}-{source.commit}.tar', f'{source.name}-{source.commit}.zip']
    return [mirror / name for name in names if (mirror / name).exists()]


def fetch(source: Source, sources: Sources, *, fill_cache: bool = True, require_cache: bool = False
          ) -> tuple[Files, str]:
    """The verified pinned tree and a description of where it came from.

    fill_cache: store a tree that did not come from the cache (a failure to store is a warning,
    or an error with require_cache).
    """
    cached = read_cache(source)
    if cached is not None:
        return cached, 'cache'
    files, origin = _fetch_uncached(source, sources)
    files = match_tree(files, source, origin)
    if fill_cache and (problem := write_cache(source, files)):
        if require_cache:
            raise GanpatchError(problem, 'make the cache writable, or point GANPATCH_CACHE at a writable folder')
        log(f'warning: {problem}; building without caching')
    return files, origin


def _fetch_uncached(source: Source, sources: Sources) -> tuple[Files, str]:
    if sources.source is not None:
        files = read_source(sources.source, source)
        if files is None:
            raise NoSourceError(f'--source {sources.source} does not contain commit {source.commit}',
                                f'fetch {source.slug} into it, or give another --source')
        return files, str(sources.source)
    problems = []
    for candidate in mirror_candidates(sources.mirror, source) if sources.mirror else []:
        try:
            files = read_source(candidate, source)
        except UnreadableSource as exc:
            log(f'note: {exc}')
            problems.append(str(exc))
            continue
        if files is not None:
            return files, str(candidate)
        log(f'note: mirror {candidate} lacks commit {source.commit}')
    if sources.offline:
        where = f'mirror {sources.mirror}' if sources.mirror else 'no mirror given'
        raise NoSourceError(f'no cached or mirrored copy of {source.label} ({source.slug}@{source.commit}; {where})',
                            f'run apply.py once with --mirror DIR or --source PATH (or online) to fill {cache_dir()}',
                            details=problems)
    return download_github(source), f'https://github.com/{source.slug} archive'


def download_github(source: Source) -> Files:
    """GitHub's tar.gz of the commit, read into memory, with progress on a slow download."""
    url = f'https://github.com/{source.slug}/archive/{source.commit}.tar.gz'
    opener = urllib.request.build_opener(urllib.request.ProxyHandler())  # http(s)_proxy, no_proxy
    log(f'{source.label}: downloading {url}')
    try:
        with opener.open(url, timeout=60) as response:
            data = _read_with_progress(response, int(response.headers.get('Content-Length') or 0))
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, 'reason', exc)
        raise NoSourceError(f'cannot download {url}: {reason}',
                            'no network? use --mirror DIR (or $GANPATCH_MIRROR) or --source PATH; '
                            '--offline never tries the network') from exc
    return read_tar(io.BytesIO(data), url)


def _read_with_progress(response, total: int) -> bytes:
    chunks, received, started, shown = [], 0, time.monotonic(), 0.0
    while chunk := response.read(1 << 16):
        chunks.append(chunk)
        received += len(chunk)
        elapsed = time.monotonic() - started
        if elapsed > 1.0 and elapsed - shown >= 1.0:
            shown = elapsed
            of_total = f' of {total / 1e6:.1f} MB ({100 * received // total}%)' if total else ''
            log(f'  {received / 1e6:.1f} MB{of_total}, {received / 1e6 / elapsed:.2f} MB/s')
    return b''.join(chunks)
