"""Where checkpoints come from and where they go: safe reading, downloads, atomic writing.

Reading (:func:`read_checkpoint`) takes a local file, a folder written by transformers'
``save_pretrained`` (or a downloaded hub snapshot), an ``http(s)://`` URL, or bytes. The
format is recognised from the content, never from the name: a ``torch.save`` file (read by
:mod:`.decode`, which runs no code) or a ``.safetensors`` file (read by the
``safetensors`` library). Only regular files are opened: a FIFO, a device, or anything
under ``/proc``, ``/sys`` or ``/dev`` is refused by name before it is read.

URLs are downloaded once into ``<torch hub dir>/checkpoints/cvt_backbone/`` under a name
this module makes (a hash of the URL and the URL's file name, reduced to safe characters),
never extracted, and re-read with the same reader at every load.

Writing (:func:`atomic_write_bytes`, :func:`atomic_save`, :func:`atomic_write_text`)
goes to a hidden temporary file beside the target, which is flushed to disk and renamed
over the target in one step; the folder is synced so the rename survives a power loss.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import os.path as osp
import re
import stat
import urllib.error
import urllib.parse
import uuid
from collections import OrderedDict
from pathlib import Path
from typing import BinaryIO

import torch

from .errors import CheckpointError
from .decode import decode_torch_file

#: Files of a transformers folder, in the order they are looked for.
TRANSFORMERS_WEIGHTS = ('model.safetensors', 'pytorch_model.bin')
#: Folders whose files are not checkpoints, whatever they are called.
_SPECIAL_ROOTS = ('/proc/', '/sys/', '/dev/')
#: Suffix of the temporary files (hidden: ``.<name>.<random>.tmp``) that writes go through.
TMP_SUFFIX = '.tmp'
_SAFETENSORS_HEADER_LIMIT = 100 << 20


def is_url(source: object) -> bool:
    """Whether ``source`` is an ``http://`` or ``https://`` URL."""
    return isinstance(source, str) and source.startswith(('http://', 'https://'))


# --------------------------------------------------------------------------- local files
def _describe_mode(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, 'a FIFO (named pipe)'), (stat.S_ISCHR,
                       'a character device'), (stat.S_ISBLK, 'a block device'),
                       (stat.S_ISSOCK, 'a socket'), (stat.S_ISDIR, 'a directory')):
        if test(mode):
            return name
    return 'not a regular file'


def check_local_path(path: str | os.PathLike, allow_dir: bool = False) -> str:
    """Check that ``path`` is a regular file (or, if allowed, a folder) before reading it.

    Nothing is opened: a FIFO would block the caller, ``/dev/zero`` would never end.

    Args:
        path: A local path (``~`` is expanded).
        allow_dir: Accept a folder (a transformers ``save_pretrained`` folder).

    Returns:
        The expanded path.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointError: it is a FIFO, device, socket, ``/proc``, ``/sys`` or ``/dev`` path,
            an empty file, or a folder where none is allowed.
    """
    path = osp.expanduser(os.fspath(path))
    real = osp.realpath(path)
    if real.startswith(_SPECIAL_ROOTS) or real in ('/proc', '/sys', '/dev'):
        raise CheckpointError(f'Refused to read checkpoint {path!r}: it lies under '
                              f'/{real.split("/")[1]}, which holds devices and kernel files, '
                              f'not checkpoints')
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise FileNotFoundError(f'Checkpoint {path!r} does not exist') from None
    except OSError as err:
        raise CheckpointError(f'Could not read checkpoint {path!r}: {err.strerror}') from None
    if stat.S_ISDIR(mode) and allow_dir:
        return path
    if not stat.S_ISREG(mode):
        kind = _describe_mode(mode)
        raise CheckpointError(f'Refused to read checkpoint {path!r}: it is {kind}, not a '
                              f'checkpoint file')
    if os.path.getsize(path) == 0:
        raise CheckpointError(f'Checkpoint file {path!r} is empty (0 bytes)')
    return path


def _open_regular(path: str) -> tuple[BinaryIO, int]:
    """Open a checked path; refuse it if it changed into something else meanwhile."""
    fd = os.open(path, os.O_RDONLY | getattr(os, 'O_NONBLOCK', 0) | getattr(os, 'O_CLOEXEC', 0))
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise CheckpointError(f'Refused to read checkpoint {path!r}: it is '
                              f'{_describe_mode(info.st_mode)}, not a checkpoint file')
    return os.fdopen(fd, 'rb'), info.st_size


def _is_safetensors(head: bytes, size: int) -> bool:
    if len(head) < 9:
        return False
    header = int.from_bytes(head[:8], 'little')
    return head[8:9] == b'{' and 0 < header <= min(size - 8, _SAFETENSORS_HEADER_LIMIT)


def _read_safetensors(source: str, path: str | None = None, data: bytes | None = None
                      ) -> OrderedDict:
    from safetensors import SafetensorError
    from safetensors.torch import load, safe_open

    try:
        if data is not None:
            return OrderedDict(load(data))
        with safe_open(path, framework='pt') as f:
            return OrderedDict((key, f.get_tensor(key)) for key in f.keys())
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f'Could not read safetensors file {source}: it is truncated or '
                              f'corrupt ({detail})') from None


def _read_stream(stream: BinaryIO, size: int, source: str, path: str | None) -> object:
    head = stream.read(16)
    stream.seek(0)
    if _is_safetensors(head, size):
        return _read_safetensors(source, path=path, data=None if path else stream.read())
    return decode_torch_file(stream, size, source)


# --------------------------------------------------------------------------- folders
def read_transformers_folder(path: str) -> dict:
    """Read a folder written by ``save_pretrained`` (or a downloaded hub snapshot).

    Returns:
        ``{'state_dict': the transformers state dict, 'meta': {'transformers_config':
        config.json}}``.

    Raises:
        CheckpointError: no ``config.json`` or no weights file, a ``config.json`` that is not
            JSON or not of a CvT (``model_type`` other than ``'cvt'``).
    """
    config_file = osp.join(path, 'config.json')
    weights = [osp.join(path, name) for name in TRANSFORMERS_WEIGHTS
               if osp.isfile(osp.join(path, name))]
    if not weights:
        raise CheckpointError(f'Checkpoint folder {path!r} holds no weights: expected one of '
                              f'{", ".join(TRANSFORMERS_WEIGHTS)} (a folder written by '
                              f'save_pretrained or a downloaded hub snapshot)')
    config = read_transformers_config(config_file) if osp.exists(config_file) else None
    if config is None:
        raise CheckpointError(f'Checkpoint folder {path!r} has weights but no config.json, '
                              f'so its arch cannot be checked')
    state_dict = read_checkpoint(weights[0])
    if not isinstance(state_dict, dict):
        raise CheckpointError(f'{weights[0]!r} does not hold a state dict')
    return {'state_dict': state_dict, 'meta': {'transformers_config': config,
                                                'source': weights[0]}}


def read_transformers_config(config_file: str) -> dict:
    """Read and check a transformers ``config.json`` of a CvT.

    Raises:
        CheckpointError: not JSON, not a dict, or ``model_type`` is not ``'cvt'``.
    """
    check_local_path(config_file)
    try:
        with open(config_file, encoding='utf-8') as f:
            config = json.load(f)
    except (ValueError, UnicodeDecodeError) as err:
        raise CheckpointError(f'{config_file!r} is not valid JSON ({err})') from None
    if not isinstance(config, dict) or config.get('model_type') != 'cvt':
        kind = config.get('model_type') if isinstance(config, dict) else type(config).__name__
        raise CheckpointError(f'{config_file!r} describes a transformers model of type '
                              f'{kind!r}, not a CvT (model_type "cvt")')
    return config


# --------------------------------------------------------------------------- URLs
def url_cache_dir() -> str:
    """Where downloaded checkpoints are kept: ``<torch hub dir>/checkpoints/cvt_backbone``."""
    return osp.join(torch.hub.get_dir(), 'checkpoints', 'cvt_backbone')


def cache_path(url: str) -> str:
    """The cache file of ``url``: a hash of the whole URL and its file name, safe characters.

    Two URLs that end in the same file name (every hub repository's ``model.safetensors``)
    get different files; no part of the URL can name a folder.
    """
    name = osp.basename(urllib.parse.urlparse(url).path) or 'checkpoint'
    name = re.sub(r'[^A-Za-z0-9._-]', '_', name).lstrip('.')[-80:] or 'checkpoint'
    digest = hashlib.sha256(url.encode('utf-8')).hexdigest()[:16]
    return osp.join(url_cache_dir(), f'{digest}-{name}')


def download(url: str, progress: bool = True) -> str:
    """Download ``url`` into the cache once; return the cached file.

    Args:
        url: An ``http(s)://`` URL.
        progress: Show a progress bar while downloading.

    Raises:
        CheckpointError: the URL cannot be fetched (the message says why: HTTP status or
            network error).
    """
    target = cache_path(url)
    if osp.isfile(target):
        return target
    os.makedirs(osp.dirname(target), exist_ok=True)
    partial = f'{target}.{uuid.uuid4().hex[:12]}.partial'
    try:
        torch.hub.download_url_to_file(url, partial, progress=progress)
        os.replace(partial, target)
    except urllib.error.HTTPError as err:
        raise CheckpointError(f'Could not download checkpoint {url}: HTTP {err.code} '
                              f'{err.reason}') from None
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = getattr(err, 'reason', None) or err
        raise CheckpointError(f'Could not download checkpoint {url}: {reason}') from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)
    return target


_HUB_FILE = re.compile(r'^(?P<repo>/[^/]+/[^/]+/resolve/[^/]+/)(?P<file>[^/]+)$')


def download_with_config(url: str, progress: bool = True) -> tuple[str, str | None]:
    """Download a checkpoint and, for a hub ``resolve/`` URL, the ``config.json`` beside it.

    Returns:
        The cached checkpoint and the cached ``config.json`` (None when the URL is no hub
        file URL or the repository has no ``config.json``).
    """
    path = download(url, progress)
    parts = urllib.parse.urlparse(url)
    match = _HUB_FILE.match(parts.path)
    if not match or match['file'] == 'config.json':
        return path, None
    config_url = parts._replace(path=match['repo'] + 'config.json', query='').geturl()
    try:
        return path, download(config_url, progress=False)
    except CheckpointError:
        return path, None


# --------------------------------------------------------------------------- reading
def _to_device(obj: object, device: torch.device) -> object:
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        for key in obj:
            obj[key] = _to_device(obj[key], device)
        return obj
    if isinstance(obj, list):
        obj[:] = [_to_device(item, device) for item in obj]
        return obj
    if type(obj) is tuple:
        return tuple(_to_device(item, device) for item in obj)
    return obj


def _place(obj: object, map_location: object) -> object:
    """Apply a ``map_location`` given as a device (a callable keeps the tensors on the CPU)."""
    if isinstance(map_location, (str, torch.device)) and torch.device(map_location).type != 'cpu':
        return _to_device(obj, torch.device(map_location))
    return obj


def read_checkpoint(source: str | os.PathLike | bytes, map_location: object = 'cpu') -> object:
    """Read a checkpoint from a file, a transformers folder, a URL or bytes, running no code.

    Args:
        source: A local file (``torch.save`` or safetensors), a ``save_pretrained`` folder,
            an ``http(s)://`` URL (downloaded once, see :func:`download`), or the bytes of a
            file.
        map_location: A device for the tensors (default CPU).

    Returns:
        What a ``torch.save`` file holds; a safetensors file gives its state dict; a folder
        gives ``{'state_dict': ..., 'meta': {'transformers_config': ...}}``.

    Raises:
        FileNotFoundError: a local path does not exist.
        CheckpointError: anything else that keeps the checkpoint from being read safely;
            the message names the file or URL.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        return _place(_read_stream(io.BytesIO(data), len(data), 'from memory', None),
                      map_location)
    if is_url(source):
        path, config = download_with_config(source)
        checkpoint = read_checkpoint(path, map_location)
        if config is not None and isinstance(checkpoint, dict) and 'meta' not in checkpoint:
            checkpoint = {'state_dict': checkpoint,
                          'meta': {'transformers_config': read_transformers_config(config),
                                   'source': source}}
        return checkpoint
    path = check_local_path(source, allow_dir=True)
    if osp.isdir(path):
        return _place(read_transformers_folder(path), map_location)
    stream, size = _open_regular(path)
    with stream:
        return _place(_read_stream(stream, size, repr(path), path), map_location)


# --------------------------------------------------------------------------- writing
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
    rename is atomic), are fsynced, and replace the target with ``os.replace``; then the
    folder is fsynced. The new file gets the permissions a plain ``open(filepath, 'wb')``
    would give it. On an exception the temporary file is removed; only a process killed
    mid-write leaves one behind (hidden, never under the target's name).

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
