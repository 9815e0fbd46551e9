"""Atomic local writes: temp file beside the target, fsync, rename, fsync the folder.

A process killed mid-write leaves only a `.<name>.tmp-<random>` file, never
a half-written file under the real name that a later run could trust.
"""

import contextlib
import os
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_file(target: Path, mode: int = 0o600) -> Iterator[BinaryIO]:
    """A writable handle whose content appears at `target` only if the block completes."""
    target = Path(target)
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
        fsync_dir(target.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(target: Path, data: bytes | Iterable[bytes], mode: int = 0o600) -> None:
    """Write `data` (bytes or an iterable of chunks) to `target` atomically."""
    with atomic_file(target, mode) as handle:
        for chunk in [data] if isinstance(data, bytes) else data:
            handle.write(chunk)
