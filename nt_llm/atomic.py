"""Write a folder or a file so that readers see the old one or the complete new one, never half of either.

A folder is written into a temporary sibling (``atomic_folder``) and swapped in (``swap_in``): the old folder is
renamed aside, the new one renamed to its name, and only then is the old one deleted. A failure while writing
removes the temporary folder and leaves the old one as it was; a failure of the swap renames the old one back.
Renames within one folder are atomic on POSIX file systems, which is why every temporary name is a sibling.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_folder(final: Path) -> Iterator[Path]:
    """Yield an empty temporary sibling of `final` to write into; when the block ends without an exception, give it
    ordinary permissions and swap it in for `final` (created or replaced). On an exception the temporary folder is
    removed and `final` is untouched."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        yield tmp
        ordinary_permissions(tmp)
        swap_in(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already after a successful swap


def swap_in(new: Path, final: Path) -> None:
    """Rename the complete folder `new` (a sibling of `final`) to `final`. An existing `final` is renamed aside first
    and deleted only once `new` is in place; if that rename fails, the old `final` is renamed back."""
    if not final.exists():
        new.rename(final)
        return
    old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
    final.rename(old)
    try:
        new.rename(final)
    except BaseException:
        old.rename(final)
        raise
    if old.is_dir():
        shutil.rmtree(old)
    else:
        old.unlink()


def write_text(path: Path, text: str) -> None:
    """Replace the file `path` with `text` whole: written beside it, given ordinary permissions, then renamed."""
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        tmp.write_text(text, encoding="utf-8")
        tmp.chmod(0o666 & ~umask())
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def ordinary_permissions(folder: Path) -> None:
    """The modes mkdir and open would have given (0755 / 0644 under a 022 umask) instead of mkdtemp's 0700 and the
    0600 of files written through temporary files: other users and containers must be able to read what is
    published."""
    mask = umask()
    for path in [folder, *folder.rglob("*")]:
        if not path.is_symlink():
            path.chmod((0o777 if path.is_dir() else 0o666) & ~mask)


def umask() -> int:
    """The process's umask."""
    # os.umask is the only portable way to read it, and it sets as it reads: the old value goes straight back.
    mask = os.umask(0o077)
    os.umask(mask)
    return mask
