"""The one path policy: which names may become files, and where.

Everything that turns outside text (an imported record, a session id, a form field, an API call)
into a file path goes through these pure functions, so a crafted value can neither read nor write
outside the folder it belongs to:

- stored pictures are named by their content hash: `check_sha` accepts 64 lower-case hex digits only;
- ids (session ids, export names) become one path part through `safe_part`, never a separator or `..`;
- `under(root, name)` resolves a name (or a path) and refuses it unless it lies inside `root`;
- `media_file(ref, roots, uploads)` finds an imported record's picture: an uploaded file by its
  name, else a path inside one of the roots the operator named; anything else is "not available".
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterable

SHA_RE = re.compile(r"[0-9a-f]{64}")
PART_RE = re.compile(r"[^A-Za-z0-9._-]+")
MAX_PART = 100


class PathError(ValueError):
    """A name that would leave its folder, or is not a valid stored name; the message says which."""


def is_sha(value) -> bool:
    return isinstance(value, str) and SHA_RE.fullmatch(value) is not None


def is_token(value) -> bool:
    """A visitor token as the app makes them: 32 hex digits."""
    return isinstance(value, str) and re.fullmatch(r"[0-9a-f]{32}", value) is not None


def check_sha(value) -> str:
    """A content hash as stored (sha256 hex); anything else is refused before it touches the disk."""
    if not is_sha(value):
        raise PathError(f"not a stored image name (64 hex digits): {str(value)[:40]!r}")
    return value


def safe_part(value, fallback: str = "item") -> str:
    """One path component made from untrusted text: letters, digits, '.', '_', '-' only, no leading
    dot, at most 100 characters (so '../../x' becomes 'x' and never a separator)."""
    part = PART_RE.sub("_", str(value)).strip("._")[:MAX_PART]
    return part or fallback


def within(path: str | Path, root: str | Path) -> bool:
    """Whether `path` (symlinks resolved) is `root` or inside it."""
    try:
        Path(os.path.realpath(path)).relative_to(os.path.realpath(root))
    except ValueError:
        return False
    return True


def under(root: str | Path, name: str | Path) -> Path:
    """`name` resolved inside `root` (a relative name is taken from root); PathError when it escapes."""
    root = Path(os.path.realpath(root))
    path = Path(name)
    path = Path(os.path.realpath(path if path.is_absolute() else root / path))
    if path == root or not within(path, root):
        raise PathError(f"{str(name)[:120]!r} is not a name inside {root.name}/")
    return path


def media_file(ref, roots: Iterable[str | Path] = (), uploads: Iterable[str | Path] = ()) -> Path | None:
    """The file an imported record names, if it may be read: an uploaded file with that file name,
    else an existing file inside one of `roots` (relative names are tried against each root).
    None when the record names something else: it is never opened."""
    if not isinstance(ref, str) or not ref or "\x00" in ref:
        return None
    name = Path(ref).name
    for up in uploads:
        if Path(up).name == name and Path(up).is_file():
            return Path(up)
    for root in roots:
        try:
            path = under(root, ref)
        except (PathError, OSError):
            continue
        if path.is_file():
            return path
    return None
