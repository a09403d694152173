"""Fetching a pinned tree once per run, only if it is needed, and saying where it came from."""
from __future__ import annotations

from .errors import log
from .fetch import Sources, fetch
from .pins import Source
from .trees import Files


class Lazy:
    """`Lazy(source, sources)()` fetches (cache, --source, mirror, GitHub) on the first call only."""

    def __init__(self, source: Source, sources: Sources, *, fill_cache: bool = True):
        self.source, self.sources, self.fill_cache = source, sources, fill_cache
        self.files: Files | None = None

    def __call__(self) -> Files:
        if self.files is None:
            self.files, origin = fetch(self.source, self.sources, fill_cache=self.fill_cache)
            log(f'{self.source.label}: {self.source.slug}@{self.source.commit[:12]} from {origin} '
                f'(tree {self.source.tree[:12]} verified)')
        return self.files
