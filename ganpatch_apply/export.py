"""From a tree's commits to patch files: messages that survive the mail format, stable file names.

A format-patch file is a mail; `git mailinfo` reads it back. Some commit messages do not survive
that round trip, so they are refused with the line to change (`message_problems`): a line `---`,
or one starting `diff -` or `Index: `, ends the description (the patch is read from there); a first
body line `From:`, `Subject:` or `Date:` is read as a header; a first paragraph of several lines
becomes one subject line; a leading `[PATCH ...]` is stripped.

Files are exported with `git format-patch -N` (`[PATCH]`, no `n/m` numbering), and a patch whose
content did not change keeps its file untouched, whatever numbering its subject carries: adding a
patch rewrites no other file. A changed patch keeps its file name; a new one is named after its
position in the series (`NNNN-<subject>.patch`), or the next free number.
"""
from __future__ import annotations

import re
from pathlib import Path

from .git import Repo

FORMAT_PATCH = ['-c', 'core.abbrev=7', '-c', 'diff.algorithm=myers', '-c', 'diff.renames=true',
                '-c', 'diff.noprefix=false', '-c', 'diff.mnemonicPrefix=false', '-c', 'diff.relative=false',
                '-c', 'format.signOff=false', '-c', 'format.coverLetter=false', '-c', 'format.thread=false',
                '-c', 'format.suffix=.patch', '-c', 'format.useAutoBase=false',
                'format-patch', '--zero-commit', '--no-signature', '-N', '--subject-prefix=PATCH']
_NUMBERED = re.compile(rb'^Subject: \[PATCH \d+/\d+\]', re.M)
_IN_BODY_HEADER = re.compile(r'(from|subject|date):', re.I)


def message_problems(message: bytes) -> list[str]:
    """Why a commit message would change on its way through a patch file (empty: it survives)."""
    lines = message.decode('utf-8', 'replace').split('\n')
    subject_end = next((i for i, line in enumerate(lines) if not line.strip()), len(lines))
    problems = []
    if subject_end > 1:
        problems.append(f'its first paragraph has {subject_end} lines; a patch joins them into one subject line '
                        '(leave a blank line after the first line)')
    if re.match(r'\s*\[[^\]]*PATCH[^\]]*\]', lines[0]):
        problems.append(f'its subject starts with {lines[0].split("]")[0]}], which git am strips')
    body = lines[subject_end:]
    first = next((line for line in body if line.strip()), '')
    if _IN_BODY_HEADER.match(first):
        problems.append(f'its first body line {first!r} would be read as a mail header')
    for number, line in enumerate(body, subject_end + 1):
        if is_patch_break(line):
            problems.append(f'line {number} {line!r} would end the description (a patch is read from there); '
                            'indent it by a space')
    return problems


def is_patch_break(line: str) -> bool:
    """Whether `git mailinfo` takes this message line for the start of the patch (its `patchbreak`)."""
    if line.startswith(('diff -', 'Index: ')):
        return True
    if not line.startswith('---'):
        return False
    rest = line[3:]
    return (rest.startswith(' ') and len(rest) > 1 and not rest[1].isspace()) or not rest.strip()


def export_series(repo: Repo, base: str, tip: str, out: Path) -> list[Path]:
    """format-patch files of `base..tip`, in order."""
    repo.run([*FORMAT_PATCH, '-o', str(out), f'{base}..{tip}'])
    return sorted(out.iterdir())


def normalized(patch: bytes) -> bytes:
    """A patch file without what does not change its meaning: header folding and `[PATCH n/m]` numbering."""
    header, sep, rest = patch.partition(b'\n\n')
    header = re.sub(rb'\n[ \t]+', b' ', header)
    return _NUMBERED.sub(b'Subject: [PATCH]', header, count=1) + sep + rest


def plan_patch_files(old: dict[str, bytes], exported: list[Path]) -> list[tuple[str, bytes | None]]:
    """(file name, new bytes or None when the existing file stays as it is) for each exported patch.

    `old` is the current series (file name -> bytes), in order.
    """
    claimed: set[str] = set()
    plan: list[tuple[str | None, bytes | None, str]] = []
    for path in exported:
        data = path.read_bytes()
        slug = path.name.split('-', 1)[1]
        same = next((name for name in old if name not in claimed and normalized(old[name]) == normalized(data)), None)
        if same is None:
            same = next((name for name in old if name not in claimed and name.split('-', 1)[-1] == slug), None)
            plan.append((same, data, slug))
        else:
            plan.append((same, None, slug))
        if same is not None:
            claimed.add(same)
    taken = set(claimed)
    result = []
    for position, (name, data, slug) in enumerate(plan, 1):
        if name is None:
            number = position
            while f'{number:04d}-{slug}' in taken:
                number += 1
            name = f'{number:04d}-{slug}'
            taken.add(name)
        result.append((name, data))
    return result
