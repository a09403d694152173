#!/usr/bin/env bash
# The test command: creates the test environment, fills the upstream cache, runs pytest.
#
#   ./run_tests.sh [pytest arguments...]
#
# Environment:
#   GANPATCH_VENV        where the virtual environment lives (default .venv; reused when present)
#   GANPATCH_MIRROR      a mirror for apply.py (default ../shared/upstreams when that folder exists)
#   GANPATCH_ALLOW_SKIP  1: an integration test whose upstream is missing skips instead of failing
#
# The upstreams come through apply.py's normal sources: the cache (~/.cache/ganpatch or
# $GANPATCH_CACHE), $GANPATCH_MIRROR, then GitHub.
set -euo pipefail
cd "$(dirname "$0")"

venv=${GANPATCH_VENV:-.venv}
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install --isolated --quiet --disable-pip-version-check -r tests/requirements.txt

if [ -z "${GANPATCH_MIRROR:-}" ] && [ -d ../shared/upstreams ]; then
    GANPATCH_MIRROR=$(cd ../shared/upstreams && pwd)
    export GANPATCH_MIRROR
fi

# Fill the cache with every pinned upstream and the original authors' code (a no-op when it is warm).
# Without a source the tests below fail, naming what is missing, unless GANPATCH_ALLOW_SKIP=1.
if ! "$venv/bin/python" apply.py --fetch --target all --with-authors; then
    echo "run_tests.sh: some upstreams could not be fetched; the integration tests that need them will fail" \
         "(set GANPATCH_ALLOW_SKIP=1 to skip them instead)" >&2
fi

exec "$venv/bin/python" -m pytest "$@"
