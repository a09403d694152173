"""ganpatch_apply: the work behind apply.py (standard library only; `python apply.py` runs from a fresh clone).

One module, one job:

    pins.py         upstream.lock: targets, their upstream and the authors' code, pinned by commit + tree id
    trees.py        trees in memory, git tree ids in pure Python, path safety
    archives.py     reading tar/zip archives and git repositories into trees
    cache.py        the verified cache of upstream trees
    fetch.py        the order of sources (cache, --source, mirror, GitHub), always verified
    sourcing.py     fetching once per run, only when needed
    inputs.py       this repository's patch series and overlays of a target
    commits.py      making a tree's commits (upstream, one per patch, overlays) without touching a work tree
    authors.py      the `authors` branch (upstream + the original authors' change)
    stamp.py        what a tree was built from
    state.py        the state of a destination (missing, foreign, interrupted, up to date, outdated)
    checkout.py     moving a work tree between commits without losing anything
    journal.py      the record that makes an interrupted update finishable
    update.py       building a tree and updating it in place
    conflict.py     --3way conflict trees
    export.py       commits to patch files (messages that survive, stable file names)
    staging.py      replacing files of patches/ and overlays/ safely (for --refresh)
    refresh.py      --refresh, with its proof
    check.py        --check and --fetch
    reports.py      --list, --status, --diff
    destination.py  where a tree goes
    locking.py      one apply.py at a time per destination
    git.py          running git (scrubbed environment, fixed identity)
    errors.py       exit codes and errors
"""
