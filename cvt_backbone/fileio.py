"""Crash-safe local writes for MMEngine: a checkpoint is either complete or absent.

MMEngine's ``save_checkpoint`` serialises a checkpoint in memory and hands the bytes to the
file backend of the target path; its :class:`~mmengine.fileio.LocalBackend` opens the final
path and writes into it, so a crash, a kill or a full disk mid-write leaves a truncated
``epoch_N.pth`` under the real name. :class:`AtomicLocalBackend` writes to a hidden temporary
file in the same folder, flushes it to disk, and renames it over the target in one step
(``os.replace``), then syncs the folder so that the rename itself survives a power loss.

Importing this module registers it as MMEngine's ``local`` backend (the one for paths without
a ``scheme://``), which ``save_checkpoint`` and ``mmengine.fileio.put``/``put_text`` use.
"""
from __future__ import annotations

import contextlib
import os
import os.path as osp
import uuid
from pathlib import Path

import mmengine
from mmengine.fileio import LocalBackend, register_backend

#: Suffix of the temporary files (hidden: ``.<name>.<random>.tmp``) that writes go through.
TMP_SUFFIX = '.tmp'


def _fsync_dir(directory: str) -> None:
    """Flush a folder's entries (a finished rename) to disk, where the platform allows it."""
    if not hasattr(os, 'O_DIRECTORY'):
        return
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(data: bytes, filepath: str | Path) -> None:
    """Write ``data`` to ``filepath`` so that readers see the old file or the whole new one.

    The bytes go to ``.<name>.<random>.tmp`` beside the target (same file system, so the
    rename is atomic), are fsynced, and replace the target with ``os.replace``. The new file
    gets the permissions a plain ``open(filepath, 'wb')`` would give it. On an exception the
    temporary file is removed; only a process killed mid-write leaves one behind (hidden,
    never under the target's name).

    Args:
        data: The file's new content.
        filepath: The target; missing parent folders are created.
    """
    filepath = os.fspath(filepath)
    directory = osp.dirname(osp.abspath(filepath))
    mmengine.mkdir_or_exist(directory)
    tmp = osp.join(directory, f'.{osp.basename(filepath)}.{uuid.uuid4().hex[:12]}{TMP_SUFFIX}')
    # O_EXCL: never write through someone else's file; mode 0o666 is filtered by the umask
    # exactly as open(..., 'wb') would be.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, 'O_BINARY', 0), 0o666)
    try:
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, filepath)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(directory)


@register_backend('local', force=True, prefixes='')
class AtomicLocalBackend(LocalBackend):
    """MMEngine's local storage backend with atomic, durable :meth:`put` and :meth:`put_text`.

    Everything else (reads, listing, removal, symlinks) is :class:`LocalBackend`'s.
    """

    def put(self, obj: bytes, filepath: str | Path) -> None:
        """Write bytes to ``filepath`` atomically (see :func:`atomic_write_bytes`).

        Args:
            obj: Data to be written.
            filepath: Path to write to; missing folders are created.
        """
        atomic_write_bytes(obj, filepath)

    def put_text(self, obj: str, filepath: str | Path, encoding: str = 'utf-8') -> None:
        """Write text to ``filepath`` atomically.

        Args:
            obj: Text to be written.
            filepath: Path to write to; missing folders are created.
            encoding: Text encoding.
        """
        atomic_write_bytes(obj.encode(encoding), filepath)
