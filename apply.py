#!/usr/bin/env python3
"""Build patched trees of the pinned upstream GAN codebases (the command line; the work is in ganpatch_apply/).

    python apply.py --target T|all [--dest DIR] [--source PATH] [--mirror DIR] [--offline]
                    [--force] [--3way] [--with-authors]
                    [--check | --fetch | --status | --diff | --refresh | --list]

`upstream.lock` pins every target to an upstream commit and its git tree id. A build fetches and
verifies the tree, makes one commit for the pristine upstream (tag `upstream`), one per patch of
`patches/<target>/series` and one for the overlays (tag `ganpatch-overlays`), on branch `main` of
`build/<target>/`. An outdated tree is updated in place with checkout semantics; see docs/apply.md.

Exit codes: 0 success, 1 error (bad input, lock, git), 2 usage, 3 no upstream source available,
4 upstream rejected (tree id mismatch, unsafe or damaged source), 5 a patch does not apply (or
--refresh could not prove its export), 6 the destination holds work an update would overwrite.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:  # imported by a test rather than run as a script
    sys.path.insert(0, str(ROOT))

from ganpatch_apply.check import check_target, fetch_target  # noqa: E402
from ganpatch_apply.destination import default_dest  # noqa: E402
from ganpatch_apply.errors import EXIT_OK, GanpatchError, report  # noqa: E402
from ganpatch_apply.fetch import Sources  # noqa: E402
from ganpatch_apply.git import require_git  # noqa: E402
from ganpatch_apply.inputs import Project  # noqa: E402
from ganpatch_apply.pins import Pin, resolve_targets  # noqa: E402
from ganpatch_apply.refresh import refresh_target  # noqa: E402
from ganpatch_apply.reports import list_targets, show_diff, show_status  # noqa: E402
from ganpatch_apply.update import apply_target  # noqa: E402

COMMANDS = (('list', 'targets, pins, usability, patch counts, cache state'),
            ('check', 'fetch, verify and try every patch in a scratch repository; write nothing'),
            ('fetch', 'fetch and verify the upstream (and with --with-authors the authors\' code) into the cache'),
            ('status', 'state of the destination: up to date, outdated, modified, interrupted; its patches'),
            ('diff', 'per-patch summary, `git diff --stat upstream` (and against branch authors)'),
            ('refresh', 'export the tree\'s commits and overlay edits to patches/ and overlays/, proved first'))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Build or update build/<target>/: the pinned upstream (tag `upstream`), one commit per patch, '
                    'one overlay commit, on branch main. Exit codes: 0 ok, 1 error, 2 usage, 3 no upstream source, '
                    '4 upstream rejected, 5 patch does not apply, 6 work in the destination blocks the update.')
    parser.add_argument('--target', help='a target of upstream.lock (case-insensitive, aliases too) or `all`')
    parser.add_argument('--dest', type=Path, help='destination (default build/<target>; with `all`, the parent)')
    parser.add_argument('--source', type=Path,
                        help='git repository or .tar.gz/.zip of the pinned upstream (one target)')
    parser.add_argument('--mirror', type=Path, default=os.environ.get('GANPATCH_MIRROR') or None,
                        help='directory of git mirrors or archives (default $GANPATCH_MIRROR)')
    parser.add_argument('--offline', action='store_true', help='never use the network')
    parser.add_argument('--force', action='store_true',
                        help='move the files that block an update aside (never deletes); with --refresh: overwrite '
                             'changes made to patches/ or overlays/ since the build')
    parser.add_argument('--3way', dest='three_way', action='store_true',
                        help='on a failing patch, keep a conflict tree with markers and print its path')
    parser.add_argument('--with-authors', action='store_true',
                        help='also make branch `authors` (upstream + the original authors\' code), so that '
                             '`git diff authors HEAD` shows how ganpatch differs from them')
    commands = parser.add_mutually_exclusive_group()
    for name, text in COMMANDS:
        commands.add_argument(f'--{name}', action='store_true', help=text)
    return parser.parse_args(argv)


def validate_args(args: argparse.Namespace, pins: dict[str, Pin]) -> list[Pin]:
    """Every check on the command line, before any work starts."""
    if args.list:
        return []
    if not args.target:
        raise GanpatchError('--target is required', f'valid targets: {", ".join(pins)} (or all); --list shows them')
    targets = resolve_targets(args.target, pins)
    building = not (args.check or args.fetch or args.status or args.diff or args.refresh)
    if args.source is not None and (args.target.casefold() == 'all' or len(targets) != 1):
        raise GanpatchError('--source names the upstream of one target', 'give --target NAME, or use --mirror for all')
    if args.source is not None and not args.source.exists():
        raise GanpatchError(f'--source {args.source} does not exist', 'give a git repository or an archive')
    if args.mirror is not None and not args.mirror.is_dir():
        raise GanpatchError(f'mirror {args.mirror} is not a directory', 'fix --mirror or $GANPATCH_MIRROR')
    if (args.three_way or args.force) and not building and not (args.force and args.refresh):
        raise GanpatchError('--force and --3way only apply when building (and --force to --refresh)',
                            'drop them, or drop --check/--fetch/--status/--diff')
    if args.with_authors and not (building or args.check or args.fetch):
        raise GanpatchError('--with-authors only applies when building, with --check and with --fetch',
                            'drop it (--status and --diff report the authors branch of a tree anyway)')
    if args.with_authors and args.target.casefold() != 'all' and targets[0].authors is None:
        raise GanpatchError(f'upstream.lock pins no authors\' code for {targets[0].target}',
                            'build it without --with-authors; --list shows which targets have the authors\' code')
    return targets


def run_command(args: argparse.Namespace, project: Project, pin: Pin, many: bool, sources: Sources) -> int:
    dest = default_dest(project, pin.target, args.dest, many)
    with_authors = args.with_authors and pin.authors is not None
    if args.with_authors and pin.authors is None and not args.fetch:
        print(f'{pin.target}: no authors\' code is pinned for it (no branch authors)', file=sys.stderr)
    if args.check:
        return check_target(project, pin, sources, with_authors=with_authors)
    if args.fetch:
        return fetch_target(pin, sources, with_authors=args.with_authors)
    if args.status:
        return show_status(project, pin, dest, sources)
    if args.diff:
        return show_diff(project, pin, dest)
    if args.refresh:
        return refresh_target(project, pin, dest, sources, force=args.force)
    return apply_target(project, pin, dest, sources, force=args.force, three_way=args.three_way,
                        with_authors=with_authors)


def main(argv: list[str] | None = None, root: Path = ROOT) -> int:
    args = parse_args(argv)
    project = Project(root)
    try:
        require_git()
        pins = project.load_lock()
        targets = validate_args(args, pins)
        if args.list:
            return list_targets(project, pins)
        sources = Sources(args.source, args.mirror, args.offline)
        code = EXIT_OK
        many = args.target.casefold() == 'all'
        for pin in targets:
            try:
                code = run_command(args, project, pin, many, sources) or code
            except GanpatchError as exc:
                report(exc, pin.target if many else None)
                code = code or exc.code
        return code
    except GanpatchError as exc:
        report(exc)
        return exc.code


if __name__ == '__main__':
    try:
        sys.exit(main())
    except BrokenPipeError:  # output piped into `head` and the like
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(EXIT_OK)
    except KeyboardInterrupt:
        sys.exit(130)
