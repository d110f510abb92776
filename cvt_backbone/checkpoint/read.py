"""Where checkpoints come from: local files, transformers folders, safetensors, URLs.

:func:`read_checkpoint` takes a local file, a folder written by transformers'
``save_pretrained`` (or a downloaded hub snapshot), an ``http(s)://`` URL, or bytes. The
format is recognised from the content, never from the name: a ``torch.save`` file (read by
:mod:`.decode`, which runs no code) or a ``.safetensors`` file (read by the
``safetensors`` library). Only regular files are opened: a FIFO, a device, or anything
under ``/proc``, ``/sys`` or ``/dev`` is refused by name before it is read.

URLs are downloaded once (:func:`download`: a connect and read timeout, a size cap, a
temporary name until complete) into ``<torch hub dir>/checkpoints/cvt_backbone/`` under a
name this module makes (a hash of the URL and the URL's file name, reduced to safe
characters), never extracted, and re-read with the same reader at every load.
"""
from __future__ import annotations

import contextlib
import hashlib
import http.client
import io
import json
import os
import os.path as osp
import re
import stat
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections import OrderedDict
from typing import BinaryIO

import torch
from torch.hub import tqdm  # tqdm where it is installed, else torch's own minimal bar

from ..errors import CheckpointError
from .decode import decode_torch_file

#: Files of a transformers folder, in the order they are looked for.
TRANSFORMERS_WEIGHTS = ('model.safetensors', 'pytorch_model.bin')
#: Folders whose files are not checkpoints, whatever they are called.
_SPECIAL_ROOTS = ('/proc/', '/sys/', '/dev/')
#: Download limits, and the environment variables that override them.
TIMEOUT_ENV, DEFAULT_TIMEOUT = 'CVT_DOWNLOAD_TIMEOUT', 30.0
#: Above the largest published CvT file (CvT-W24 at 384 px from ImageNet-22k, about 1.2 GB).
MAX_BYTES_ENV, DEFAULT_MAX_BYTES = 'CVT_DOWNLOAD_MAX_BYTES', 2 << 30
#: A ``.partial`` file untouched this long belongs to no live download (see :func:`download`).
STALE_PARTIAL_SECONDS = 3600
_PARTIAL = re.compile(r'^[0-9a-f]{16}-[A-Za-z0-9._-]+\.[0-9a-f]{12}\.partial$')
_CHUNK = 1 << 20
_SAFETENSORS_HEADER_LIMIT = 100 << 20
#: A CvT config.json is about 2 kB.
_CONFIG_LIMIT = 1 << 20


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
        CheckpointError: larger than a config can be, not JSON, nested deeper than Python
            parses, not a JSON object, or ``model_type`` is not ``'cvt'``.
    """
    check_local_path(config_file)
    if osp.getsize(config_file) > _CONFIG_LIMIT:
        raise CheckpointError(f'{config_file!r} is {osp.getsize(config_file)} bytes, more than '
                              f'a config.json can be ({_CONFIG_LIMIT})')
    try:
        with open(config_file, encoding='utf-8') as f:
            config = json.load(f)
    except (ValueError, UnicodeDecodeError) as err:
        raise CheckpointError(f'{config_file!r} is not valid JSON ({err})') from None
    except RecursionError:
        raise CheckpointError(f'{config_file!r} nests its values too deeply to be a '
                              f'config.json') from None
    if not isinstance(config, dict):
        raise CheckpointError(f'{config_file!r} holds a JSON {type(config).__name__}, not the '
                              f'object of a config.json')
    if config.get('model_type') != 'cvt':
        raise CheckpointError(f'{config_file!r} describes a transformers model of type '
                              f'{config.get("model_type")!r}, not a CvT (model_type "cvt")')
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


def _env_limit(name: str, default: float, kind: type) -> float:
    value = os.environ.get(name)
    if value is None or not value.strip():
        return default
    try:
        number = kind(value)
    except ValueError:
        number = 0
    if not number > 0:
        raise CheckpointError(f'{name}={value!r} is not a positive {kind.__name__}')
    return number


def download_limits() -> tuple[float, int]:
    """The read timeout (seconds) and size cap (bytes) of :func:`download`.

    ``CVT_DOWNLOAD_TIMEOUT`` and ``CVT_DOWNLOAD_MAX_BYTES`` override 30 s and 2 GiB.

    Raises:
        CheckpointError: a variable is set to something other than a positive number.
    """
    return (_env_limit(TIMEOUT_ENV, DEFAULT_TIMEOUT, float),
            int(_env_limit(MAX_BYTES_ENV, DEFAULT_MAX_BYTES, int)))


def remove_stale_partials(folder: str, timeout: float) -> None:
    """Remove the ``.partial`` files of downloads that died (killed, powered off).

    A live download writes at least once per read timeout, so a partial file whose last
    write is older than an hour (or twice the timeout, if that is longer) has no writer. Only
    names :func:`download` makes are touched.
    """
    cutoff = time.time() - max(STALE_PARTIAL_SECONDS, 2 * timeout)
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(folder):
            if _PARTIAL.match(entry.name):
                with contextlib.suppress(FileNotFoundError):
                    if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                        os.unlink(entry.path)


def _network_error(err: BaseException, timeout: float) -> str:
    """Why a download failed, in words: HTTP status, timeout, broken answer, socket error."""
    if isinstance(err, urllib.error.HTTPError):
        return f'HTTP {err.code} {err.reason}'
    if isinstance(err, urllib.error.URLError) and isinstance(err.reason, BaseException):
        err = err.reason
    if isinstance(err, TimeoutError):  # socket.timeout is TimeoutError since Python 3.10
        return f'no answer within {timeout:g} s (set {TIMEOUT_ENV} to wait longer)'
    if isinstance(err, http.client.IncompleteRead):
        return 'the connection closed before the whole file arrived'
    if isinstance(err, http.client.BadStatusLine):
        return f'the server sent no valid HTTP status line ({type(err).__name__})'
    if isinstance(err, http.client.HTTPException):
        return f'the answer is not valid HTTP ({type(err).__name__}: {err})'
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    return str(getattr(err, 'reason', '') or err) or type(err).__name__


def _fetch(url: str, partial: str, timeout: float, max_bytes: int, progress: bool) -> None:
    """Stream ``url`` into the new file ``partial``, enforcing ``max_bytes`` as it arrives."""
    request = urllib.request.Request(url, headers={'User-Agent': 'cvt-backbone'})
    with urllib.request.urlopen(request, timeout=timeout) as response, \
            open(partial, 'xb') as out:
        declared = response.headers.get('Content-Length')
        declared = int(declared) if declared and declared.strip().isdigit() else None
        if declared is not None and declared > max_bytes:
            raise CheckpointError(f'Refused to download checkpoint {url}: it announces '
                                  f'{declared} bytes, more than the {max_bytes} allowed (set '
                                  f'{MAX_BYTES_ENV} to allow more)')
        received = 0
        with tqdm(total=declared, disable=not progress, unit='B', unit_scale=True,
                  unit_divisor=1024) as bar:
            while chunk := response.read(_CHUNK):
                received += len(chunk)
                if received > max_bytes:
                    raise CheckpointError(f'Stopped downloading checkpoint {url}: it sent more '
                                          f'than the {max_bytes} bytes allowed (set '
                                          f'{MAX_BYTES_ENV} to allow more)')
                out.write(chunk)
                bar.update(len(chunk))
        if declared is not None and received != declared:
            raise CheckpointError(f'Could not download checkpoint {url}: the connection closed '
                                  f'after {received} of {declared} bytes')
        out.flush()
        os.fsync(out.fileno())


def download(url: str, progress: bool = True) -> str:
    """Download ``url`` into the cache once; return the cached file.

    The bytes go to ``<cache file>.<random>.partial``, which is renamed to the cache file
    when complete and removed on any failure; partial files that a killed process left are
    removed when the next download starts (:func:`remove_stale_partials`). The connection
    and every read wait at most the timeout, and no more than the size cap is accepted
    (:func:`download_limits`).

    Args:
        url: An ``http(s)://`` URL.
        progress: Show a progress bar while downloading.

    Raises:
        CheckpointError: the URL cannot be fetched, is too large or does not answer in
            time; one line says which (HTTP status, timeout, network error, size).
    """
    target = cache_path(url)
    if osp.isfile(target):
        return target
    timeout, max_bytes = download_limits()
    folder = osp.dirname(target)
    os.makedirs(folder, exist_ok=True)
    remove_stale_partials(folder, timeout)
    partial = f'{target}.{uuid.uuid4().hex[:12]}.partial'
    try:
        _fetch(url, partial, timeout, max_bytes, progress)
        os.replace(partial, target)
    except CheckpointError:
        raise
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as err:
        raise CheckpointError(f'Could not download checkpoint {url}: '
                              f'{_network_error(err, timeout)}') from None
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
