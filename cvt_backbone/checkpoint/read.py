"""Where checkpoints come from: local files, transformers folders, URLs, hub ids, bytes.

The format is recognised from the content, never from the name: a ``torch.save`` file (read
by :mod:`.decode`, which runs no code) or a safetensors file (read by the ``safetensors``
library). URLs are downloaded by :mod:`.download`, hub ids fetched by :mod:`.hub` (see
docs/downloads.md); both are then read as local files and folders are.
"""
from __future__ import annotations

import io
import json
import os
import os.path as osp
import re
import stat
from collections import OrderedDict
from typing import BinaryIO

import torch

from ..errors import CheckpointError

#: Files of a transformers folder, in the order they are looked for.
TRANSFORMERS_WEIGHTS = ('model.safetensors', 'pytorch_model.bin')
#: Folders whose files are not checkpoints, whatever they are called.
_SPECIAL_ROOTS = ('/proc/', '/sys/', '/dev/')
_SAFETENSORS_HEADER_LIMIT = 100 << 20
#: A CvT config.json is about 2 kB.
_CONFIG_LIMIT = 1 << 20


# --------------------------------------------------------------------------- sources
def is_url(source: object) -> bool:
    """Whether ``source`` is an ``http://`` or ``https://`` URL."""
    return isinstance(source, str) and source.startswith(('http://', 'https://'))


_PREFIX = 'hf://'
_HUB_ID = re.compile(r'^(?P<repo>[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*)'
                     r'(?:@(?P<revision>[^\s@]+))?$')
#: Without ``hf://``, names ending so are taken for local checkpoint files.
_FILE_SUFFIXES = ('.pth', '.pt', '.bin', '.safetensors', '.ckpt', '.tar')


def is_hub_id(source: str) -> bool:
    """Whether ``source`` names a hub repository rather than a local path.

    Args:
        source: What :func:`read_checkpoint` was given.

    Returns:
        True for ``hf://...`` and for ``owner/name[@revision]`` not ending like a checkpoint
        file, when no local file or folder of that name exists.
    """
    if not isinstance(source, str) or osp.lexists(osp.expanduser(source)):
        return False
    if source.startswith(_PREFIX):
        return True
    return bool(_HUB_ID.match(source)) and not source.lower().endswith(_FILE_SUFFIXES)


def parse_hub_id(source: str) -> tuple[str, str | None]:
    """Split a hub id into its repository and its revision.

    Args:
        source: ``owner/name``, ``owner/name@revision`` (a branch, tag or commit), with or
            without ``hf://`` before it.

    Returns:
        ``(repo_id, revision)``; the revision is None where none is given (the repository's
        default branch).

    Raises:
        CheckpointError: ``source`` has another form.
    """
    match = _HUB_ID.match(source[len(_PREFIX):] if source.startswith(_PREFIX) else source)
    if match is None:
        raise CheckpointError(f'{source!r} is not a hub repository id: expected '
                              f'owner/name or owner/name@revision (after hf:// or not)')
    return match['repo'], match['revision']


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
            state = OrderedDict(load(data))
        else:
            with safe_open(path, framework='pt') as f:
                state = OrderedDict((key, f.get_tensor(key)) for key in f.keys())
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f'Could not read safetensors file {source}: it is truncated or '
                              f'corrupt ({detail})') from None
    if not all(key.isprintable() for key in state):  # logs name keys, as the decoder's
        raise CheckpointError(f'Refused to load safetensors file {source}: a tensor name holds '
                              f'control characters')
    return state


def _read_stream(stream: BinaryIO, size: int, source: str, path: str | None) -> object:
    head = stream.read(16)
    stream.seek(0)
    if _is_safetensors(head, size):
        return _read_safetensors(source, path=path, data=None if path else stream.read())
    from .decode import decode_torch_file  # loaded with the first torch.save file read
    return decode_torch_file(stream, size, source)


# --------------------------------------------------------------------------- folders
def read_transformers_folder(path: str) -> dict:
    """Read a folder written by ``save_pretrained`` (or a downloaded hub snapshot).

    Returns:
        ``{'state_dict': the transformers state dict, 'meta': {'transformers_config':
        config.json, 'source': the weights file}}``.

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
    if not osp.exists(config_file):
        raise CheckpointError(f'Checkpoint folder {path!r} has weights but no config.json, '
                              f'so its arch cannot be checked')
    return read_transformers_files(config_file, weights[0])


def read_transformers_files(config_file: str, weights_file: str,
                            map_location: object = 'cpu') -> dict:
    """Read a transformers ``config.json`` and the weights file saved with it.

    Args:
        config_file: The ``config.json`` of a CvT (checked by
            :func:`read_transformers_config`).
        weights_file: Its ``model.safetensors`` or ``pytorch_model.bin``, read by
            :func:`read_checkpoint`.
        map_location: A device for the tensors.

    Returns:
        ``{'state_dict': ..., 'meta': {'transformers_config': ..., 'source': weights_file}}``.

    Raises:
        CheckpointError: the config is not a CvT's, or the weights are no state dict.
    """
    config = read_transformers_config(config_file)
    state_dict = read_checkpoint(weights_file, map_location)
    if not isinstance(state_dict, dict):
        raise CheckpointError(f'{weights_file!r} does not hold a state dict')
    return {'state_dict': state_dict,
            'meta': {'transformers_config': config, 'source': weights_file}}


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
            an ``http(s)://`` URL (downloaded once, see :func:`~.download.download`), a hub
            repository id ``'owner/name[@revision]'`` or ``'hf://owner/name[@revision]'``
            where no local path of that name exists (see :mod:`.hub`), or the bytes of a
            file.
        map_location: A device for the tensors (default CPU).

    Returns:
        What a ``torch.save`` file holds; a safetensors file gives its state dict; a folder
        or a hub id gives ``{'state_dict': ..., 'meta': {'transformers_config': ...,
        'source': ...}}``.

    Raises:
        FileNotFoundError: a local path does not exist.
        CheckpointError: anything else that keeps the checkpoint from being read safely;
            the message names the file, URL or hub id.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        return _place(_read_stream(io.BytesIO(data), len(data), 'from memory', None),
                      map_location)
    # Imported here, so that `import cvt_backbone` loads no network code.
    if is_url(source):
        from .download import download_with_config
        path, config = download_with_config(source)
        checkpoint = read_checkpoint(path, map_location)
        if config is not None and isinstance(checkpoint, dict) and 'meta' not in checkpoint:
            checkpoint = {'state_dict': checkpoint,
                          'meta': {'transformers_config': read_transformers_config(config),
                                   'source': source}}
        return checkpoint
    if is_hub_id(source):
        from .hub import fetch_hub_files
        config, weights = fetch_hub_files(source, TRANSFORMERS_WEIGHTS)
        try:
            return read_transformers_files(config, weights, map_location)
        except CheckpointError as err:
            raise CheckpointError(f'Hub repository {source!r}: {err}') from None
    path = check_local_path(source, allow_dir=True)
    if osp.isdir(path):
        return _place(read_transformers_folder(path), map_location)
    stream, size = _open_regular(path)
    with stream:
        return _place(_read_stream(stream, size, repr(path), path), map_location)
