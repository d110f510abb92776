"""Atomic writes: a reader sees the old file or the whole new one, never part of either.

Every write goes to a hidden temporary file beside the target (``.<name>.<random>.tmp``, on
the same file system, so the rename is atomic), is flushed to disk, and replaces the target
with ``os.replace``; then the folder is synced so that the rename survives a power loss.
"""
from __future__ import annotations

import contextlib
import io
import os
import os.path as osp
import uuid
from pathlib import Path

import torch

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

    The new file gets the permissions a plain ``open(filepath, 'wb')`` would give it. On an
    exception the temporary file is removed; only a process killed mid-write leaves one
    behind (hidden, never under the target's name).

    Args:
        data: The file's new content.
        filepath: The target; missing parent folders are created.
    """
    filepath = os.fspath(filepath)
    directory = osp.dirname(osp.abspath(filepath))
    os.makedirs(directory, exist_ok=True)
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


def atomic_write_text(text: str, filepath: str | Path, encoding: str = 'utf-8') -> None:
    """:func:`atomic_write_bytes` for text."""
    atomic_write_bytes(text.encode(encoding), filepath)


def atomic_save(obj: object, filepath: str | Path) -> None:
    """``torch.save`` ``obj`` to ``filepath`` atomically (see :func:`atomic_write_bytes`)."""
    with io.BytesIO() as buffer:
        torch.save(obj, buffer)
        atomic_write_bytes(buffer.getvalue(), filepath)


def atomic_save_safetensors(state_dict: dict, filepath: str | Path,
                            metadata: dict[str, str] | None = None) -> None:
    """Write a state dict as a ``.safetensors`` file atomically.

    Tensors that share memory are written as separate copies (safetensors stores no views).
    """
    from safetensors.torch import save

    tensors = {k: v.detach().contiguous().clone() for k, v in state_dict.items()}
    atomic_write_bytes(save(tensors, metadata=metadata), filepath)
