"""Read ``torch.save`` files without running code from them, on every supported torch.

``torch.load(weights_only=True)`` is not used: its allow-list is global, and other packages
widen it at import time (``import torch.distributed`` alone adds every builtin exception,
``traceback.FrameSummary`` and ``DeviceMesh``, which read files and start process groups
while unpickling), and the torch releases this project supports differ in what it allows.
Instead this module unpickles with its own :class:`pickle.Unpickler` whose ``find_class``
knows exactly :data:`ALLOWED_GLOBALS` and nothing else, and rebuilds storages from the
archive's records itself. What each allowed name may build is checked:

* tensors: dense, on the CPU, without hooks or metadata, and never holding more elements
  than the storage they view (no stride-0 or overlapping views that would expand into
  gigabytes when copied);
* storages: exactly as many bytes as their record holds; the records of an archive
  together may not unpack to more bytes than the file has (a compressed record cannot
  inflate a small file into a large tensor);
* numpy arrays and scalars: only plain numeric dtypes (no fields, subarrays or metadata
  in the dtype state, which could give an array object fields), with exactly the bytes
  their shape needs;
* MMEngine's ``HistoryBuffer``: two numeric 1-D arrays of equal length and a positive
  ``max_length``; the statistics methods it pickles are ignored (the defaults are used).

After unpickling, the whole object is walked once: only containers, numbers, strings,
tensors and the objects above may be in it. Anything else is refused, naming the file.

Both formats of ``torch.save`` are read: the zip archive (torch >= 1.6) and the older
single-pickle format. Big-endian archives, the tar format of torch < 0.4 and tensor
types other than dense strided ones are refused by name.
"""
from __future__ import annotations

import io
import math
import pickle
import struct
import zipfile
from collections import Counter, OrderedDict
from collections.abc import Callable
from typing import Any, BinaryIO

import numpy as np
import torch

from .errors import CheckpointError

#: Tensor dtypes by the storage class names ``torch.save`` pickles (``torch FloatStorage``).
STORAGE_DTYPES = {
    'DoubleStorage': torch.float64, 'FloatStorage': torch.float32,
    'HalfStorage': torch.float16, 'BFloat16Storage': torch.bfloat16,
    'LongStorage': torch.int64, 'IntStorage': torch.int32, 'ShortStorage': torch.int16,
    'CharStorage': torch.int8, 'ByteStorage': torch.uint8, 'BoolStorage': torch.bool,
    'ComplexFloatStorage': torch.complex64, 'ComplexDoubleStorage': torch.complex128,
}
#: numpy dtypes an array or scalar may have (``numpy.dtype`` pickles them by these names).
NUMPY_DTYPES = ('b1', 'i1', 'i2', 'i4', 'i8', 'u1', 'u2', 'u4', 'u8', 'f2', 'f4', 'f8')

_LEGACY_MAGIC = 0x1950a86a20f9469cfc6c
_LEGACY_PROTOCOL = 1001
_CHUNK = 1 << 24
#: Python 2 and numpy 1 module names pickles may use, and what they are today.
_MODULE_ALIASES = {'__builtin__': 'builtins', 'exceptions': 'builtins',
                   'numpy.core.multiarray': 'numpy._core.multiarray'}


class _Refused(pickle.UnpicklingError):
    """A pickle asked for a global that is not on the allow-list."""


class _Malformed(pickle.UnpicklingError):
    """A pickle built something an allowed global may not build."""


# --------------------------------------------------------------------------- tensors
class _StorageType:
    """What ``torch FloatStorage`` and its siblings unpickle to: a dtype, nothing more."""

    __slots__ = ('dtype', )

    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype


class _Storage:
    """A storage rebuilt from an archive record: untyped bytes plus the dtype they hold."""

    __slots__ = ('untyped', 'dtype', 'numel')

    def __init__(self, untyped: torch.UntypedStorage, dtype: torch.dtype, numel: int) -> None:
        self.untyped, self.dtype, self.numel = untyped, dtype, numel


def _positive_ints(value: object, what: str) -> tuple[int, ...]:
    if (not isinstance(value, (tuple, list, torch.Size))
            or not all(type(v) is int and v >= 0 for v in value)):
        raise _Malformed(f'a tensor {what} is {value!r}, not a sequence of integers >= 0')
    return tuple(value)


def _rebuild_tensor(storage: object, offset: object, size: object, stride: object,
                    requires_grad: object, backward_hooks: object, metadata: object = None,
                    dtype: torch.dtype | None = None) -> torch.Tensor:
    """``torch._utils._rebuild_tensor_v2`` (and ``_v3``, with ``dtype``), with bounds checks."""
    if not isinstance(storage, _Storage):
        raise _Malformed(f'a tensor was rebuilt from {type(storage).__name__}, not a storage')
    size, stride = _positive_ints(size, 'size'), _positive_ints(stride, 'stride')
    if type(offset) is not int or offset < 0 or len(size) != len(stride):
        raise _Malformed(f'a tensor has offset {offset!r}, size {size} and stride {stride}')
    if backward_hooks or metadata or type(requires_grad) is not bool:
        raise _Malformed('a tensor carries hooks or metadata (plain weights have neither)')
    if dtype is not None and dtype is not storage.dtype:
        raise _Malformed(f'a {dtype} tensor views a {storage.dtype} storage')
    numel = math.prod(size)
    extent = offset + sum((n - 1) * s for n, s in zip(size, stride)) + 1 if numel else 0
    if numel > storage.numel or extent > storage.numel:
        raise _Malformed(f'a tensor of shape {size} and stride {stride} claims {numel} '
                         f'elements of a storage that has {storage.numel}: a tensor may not '
                         f'hold more elements than its storage')
    tensor = torch.empty(0, dtype=storage.dtype)
    tensor.set_(storage.untyped, offset, size, stride)
    tensor.requires_grad_(requires_grad and tensor.is_floating_point())
    return tensor


def _rebuild_tensor_v3(storage, offset, size, stride, requires_grad, backward_hooks, dtype,
                       metadata=None) -> torch.Tensor:
    if not isinstance(dtype, torch.dtype):
        raise _Malformed(f'a tensor dtype is {dtype!r}')
    return _rebuild_tensor(storage, offset, size, stride, requires_grad, backward_hooks,
                           metadata, dtype)


def _rebuild_parameter(data: object, requires_grad: object, backward_hooks: object
                       ) -> torch.nn.Parameter:
    if not isinstance(data, torch.Tensor) or backward_hooks or type(requires_grad) is not bool:
        raise _Malformed('a Parameter was rebuilt from something other than a plain tensor')
    return torch.nn.Parameter(data, requires_grad)


# --------------------------------------------------------------------------- numpy
class _NDArrayType:
    """What ``numpy ndarray`` unpickles to: only ever the first argument of _reconstruct."""


class _DType:
    """A numpy dtype being unpickled: ``numpy.dtype(name, align, copy)``, then its state."""

    __slots__ = ('name', 'dtype')

    def __init__(self, name: object, align: object = False, copy: object = False) -> None:
        if name not in NUMPY_DTYPES or type(align) is not bool or type(copy) is not bool:
            raise _Malformed(f'numpy dtype {name!r} is not one of the plain numeric dtypes '
                             f'{NUMPY_DTYPES}')
        self.name, self.dtype = name, None

    def __setstate__(self, state: object) -> None:
        # A plain numeric dtype pickles (3, byteorder, None, None, None, -1, -1, 0): no
        # subarray, no field names, no fields, no fixed size, alignment or flags.
        if (not isinstance(state, tuple) or len(state) != 8 or state[0] != 3
                or state[1] not in ('<', '>', '|', '=') or state[2:] != (None, None, None,
                                                                        -1, -1, 0)):
            raise _Malformed(f'numpy dtype {self.name!r} has the state {state!r}, which only '
                             f'structured or object dtypes have')
        dtype = np.dtype(self.name)
        self.dtype = dtype.newbyteorder(state[1]) if state[1] in '<>' else dtype

    def get(self) -> np.dtype:
        if self.dtype is None:
            raise _Malformed(f'numpy dtype {self.name!r} was used before its state was set')
        return self.dtype


class _Array:
    """A numpy array being unpickled: ``_reconstruct(ndarray, (0,), b'b')``, then its state."""

    __slots__ = ('array', )

    def __init__(self, subtype: object, shape: object, typecode: object) -> None:
        if subtype is not _NDArrayType:
            raise _Malformed(f'numpy _reconstruct was asked for {subtype!r}, not ndarray')
        self.array = None

    def __setstate__(self, state: object) -> None:
        if not isinstance(state, tuple) or len(state) != 5:
            raise _Malformed(f'a numpy array has the state {type(state).__name__}')
        _, shape, dtype, is_fortran, raw = state
        shape = _positive_ints(shape, 'shape')
        if not isinstance(dtype, _DType) or type(is_fortran) is not bool \
                or not isinstance(raw, bytes):
            raise _Malformed('a numpy array is not a plain numeric array')
        dtype = dtype.get()
        if len(raw) != math.prod(shape) * dtype.itemsize:
            raise _Malformed(f'a numpy array of shape {shape} and dtype {dtype} holds '
                             f'{len(raw)} bytes')
        self.array = np.frombuffer(raw, dtype).reshape(shape, order='F' if is_fortran
                                                       else 'C').copy()

    def get(self) -> np.ndarray:
        if self.array is None:
            raise _Malformed('a numpy array was used before its state was set')
        return self.array


def _numpy_scalar(dtype: object, raw: object) -> np.generic:
    if not isinstance(dtype, _DType) or not isinstance(raw, bytes):
        raise _Malformed('a numpy scalar is not a plain numeric scalar')
    dtype = dtype.get()
    if len(raw) != dtype.itemsize:
        raise _Malformed(f'a numpy {dtype} scalar holds {len(raw)} bytes')
    return np.frombuffer(raw, dtype)[0]


# --------------------------------------------------------------------------- MMEngine
#: The statistics methods ``HistoryBuffer`` pickles with itself (as ``getattr`` calls).
_HISTORY_BUFFER_STATISTICS = ('min', 'max', 'current', 'mean')


class _HistoryBufferState:
    """MMEngine's ``HistoryBuffer`` being unpickled (its class is looked up by this name).

    The real ``HistoryBuffer`` is built from the checked state when the object is walked.
    """

    __slots__ = ('state', )

    def __setstate__(self, state: object) -> None:
        if not isinstance(state, dict) or set(state) != {'max_length', '_log_history',
                                                          '_count_history',
                                                          'statistics_methods'}:
            raise _Malformed('a HistoryBuffer has a state that MMEngine does not write')
        self.state = state


def _history_buffer_statistic(owner: object, name: object) -> str:
    """The one ``getattr`` a checkpoint may call: ``getattr(HistoryBuffer, 'min')`` and co."""
    if owner is _HistoryBufferState and name in _HISTORY_BUFFER_STATISTICS:
        return name
    owner_name = ('HistoryBuffer' if owner is _HistoryBufferState
                  else getattr(owner, '__name__', type(owner).__name__))
    raise _Refused(f'getattr({owner_name}, {name!r})')


def _build_history_buffer(state: dict) -> object:
    from mmengine.logging import HistoryBuffer

    log, count, max_length = (state['_log_history'], state['_count_history'],
                              state['max_length'])
    if (not isinstance(log, np.ndarray) or not isinstance(count, np.ndarray)
            or log.ndim != 1 or log.shape != count.shape or type(max_length) is not int
            or max_length < 1):
        raise _Malformed('a HistoryBuffer does not hold two 1-D arrays of equal length')
    statistics = state['statistics_methods']
    if not isinstance(statistics, dict) or not set(statistics.values()) <= set(
            _HISTORY_BUFFER_STATISTICS):
        raise _Malformed('a HistoryBuffer pickles statistics other than min/max/current/mean')
    return HistoryBuffer(log, count, max_length)


# --------------------------------------------------------------------------- allow-list
def _encode(text: object, encoding: object = 'latin1') -> bytes:
    """``_codecs.encode``: how pickle protocol 2 writes ``bytes``; latin1 text only."""
    if not isinstance(text, str) or encoding != 'latin1':
        raise _Malformed('_codecs.encode may only turn latin1 text into bytes')
    return text.encode('latin1')


def _container(kind: type) -> Callable:
    def build(items: object = ()) -> object:
        if not isinstance(items, (list, tuple)):
            raise _Malformed(f'{kind.__name__} was built from {type(items).__name__}')
        return kind(items)
    build.__name__ = kind.__name__
    return build


def _complex(real: object = 0., imag: object = 0.) -> complex:
    if type(real) not in (int, float) or type(imag) not in (int, float):
        raise _Malformed('complex was built from something other than two numbers')
    return complex(real, imag)


def _device(spec: object, index: object = None) -> torch.device:
    if not isinstance(spec, str) or (index is not None and type(index) is not int):
        raise _Malformed(f'torch.device was built from {spec!r}')
    return torch.device(spec) if index is None else torch.device(spec, index)


def _size(dims: object = ()) -> torch.Size:
    return torch.Size(_positive_ints(dims, 'size'))


#: Every global a checkpoint may name, and what it builds. Nothing else is ever imported.
ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ('collections', 'OrderedDict'): OrderedDict,
    ('collections', 'Counter'): Counter,  # MultiStepLR's milestones
    ('builtins', 'set'): _container(set),
    ('builtins', 'frozenset'): _container(frozenset),
    ('builtins', 'complex'): _complex,
    ('_codecs', 'encode'): _encode,
    ('torch._utils', '_rebuild_tensor_v2'): _rebuild_tensor,
    ('torch._utils', '_rebuild_tensor_v3'): _rebuild_tensor_v3,
    ('torch._utils', '_rebuild_parameter'): _rebuild_parameter,
    ('torch', 'Size'): _size,
    ('torch', 'device'): _device,
    **{('torch', name): _StorageType(dtype) for name, dtype in STORAGE_DTYPES.items()},
    **{('torch', str(dtype).split('.')[1]): dtype for dtype in STORAGE_DTYPES.values()},
    ('numpy._core.multiarray', '_reconstruct'): _Array,
    ('numpy._core.multiarray', 'scalar'): _numpy_scalar,
    ('numpy', 'ndarray'): _NDArrayType,
    ('numpy', 'dtype'): _DType,
    ('mmengine.logging.history_buffer', 'HistoryBuffer'): _HistoryBufferState,
    ('builtins', 'getattr'): _history_buffer_statistic,
}


class _Unpickler(pickle.Unpickler):
    """An unpickler that can import exactly :data:`ALLOWED_GLOBALS`."""

    def __init__(self, file: BinaryIO, load_storage: Callable[[tuple], _Storage] | None
                 ) -> None:
        super().__init__(file, encoding='utf-8')
        self._load_storage = load_storage

    def find_class(self, module: str, name: str) -> Any:
        module = _MODULE_ALIASES.get(module, module)
        found = ALLOWED_GLOBALS.get((module, name))
        if found is None:
            raise _Refused(f'{module}.{name}')
        return found

    def persistent_load(self, pid: object) -> _Storage:
        if self._load_storage is None:
            raise _Malformed('a pickle refers to a storage where none may be')
        if not isinstance(pid, tuple) or not pid or pid[0] != 'storage':
            raise _Malformed(f'a pickle refers to the persistent object {pid!r:.80}')
        return self._load_storage(pid)


# --------------------------------------------------------------------------- the walk
_ATOMS = (str, bytes, int, float, bool, complex, type(None), torch.dtype, torch.device)


def _finalize(obj: object, memo: dict[int, object]) -> object:
    """Check every object that unpickling built, and turn the builders into their objects."""
    key = id(obj)
    if key in memo:
        return memo[key]
    kind = type(obj)
    if kind in _ATOMS:
        return obj
    if kind is list:
        memo[key] = obj
        obj[:] = [_finalize(item, memo) for item in obj]
        return obj
    if kind in (dict, OrderedDict, Counter):
        memo[key] = obj
        if (kind is OrderedDict and set(vars(obj)) - {'_metadata'}) or not all(
                type(k) in _ATOMS or type(k) is tuple for k in obj):
            raise _Malformed('a dict carries attributes or keys that are not plain values')
        for k in list(obj):
            obj[k] = _finalize(obj[k], memo)
        return obj
    if kind in (tuple, torch.Size):
        memo[key] = obj  # a tuple cannot contain itself; lists inside it may refer back
        items = [_finalize(item, memo) for item in obj]
        memo[key] = obj = kind(items) if any(a is not b for a, b in zip(items, obj)) else obj
        return obj
    if kind in (set, frozenset):
        if not all(type(item) in _ATOMS for item in obj):
            raise _Malformed('a set holds something other than plain values')
        return obj
    if kind in (torch.Tensor, torch.nn.Parameter):
        if (obj.layout is not torch.strided or obj.is_quantized or obj._backward_hooks
                or obj.device.type != 'cpu' or vars(obj)):
            raise _Malformed('a tensor is not a plain dense CPU tensor')
        element_size = obj.element_size()
        if obj.numel() > obj.untyped_storage().nbytes() // max(element_size, 1):
            raise _Malformed(f'a tensor of shape {tuple(obj.shape)} holds more elements than '
                             f'its storage')
        return obj
    if kind in (_Array, _DType):
        memo[key] = obj = obj.get()
        return obj
    if kind is _HistoryBufferState:
        memo[key] = obj = _build_history_buffer(
            {k: _finalize(v, memo) for k, v in obj.state.items()})
        return obj
    if kind in (np.ndarray, ) or isinstance(obj, np.generic):
        return obj  # built by _Array / _numpy_scalar from checked bytes
    raise _Malformed(f'unpickling built an object of type {kind.__name__}')


# --------------------------------------------------------------------------- formats
def _read_into(stream: BinaryIO, nbytes: int, source: str) -> bytearray:
    buffer = bytearray(nbytes)
    view, done = memoryview(buffer), 0
    while done < nbytes:
        chunk = stream.read(min(_CHUNK, nbytes - done))
        if not chunk:
            raise CheckpointError(f'Could not read checkpoint {source}: the file is truncated '
                                  f'(a storage ends after {done} of {nbytes} bytes)')
        view[done:done + len(chunk)] = chunk
        done += len(chunk)
    return buffer


def _untyped(buffer: bytearray) -> torch.UntypedStorage:
    if not buffer:
        return torch.UntypedStorage(0)
    return torch.frombuffer(buffer, dtype=torch.uint8).untyped_storage()


def _storage_pid(pid: tuple, legacy: bool) -> tuple[torch.dtype, str, int]:
    """Check a storage's persistent id; return its dtype, record key and element count."""
    fields = 6 if legacy else 5
    if len(pid) != fields:
        raise _Malformed(f'a storage reference has {len(pid)} fields, not {fields}')
    storage_type, key, location, numel = pid[1:5]
    if legacy and pid[5] is not None:
        raise _Malformed('a storage is a view of another (the format of torch < 1.0)')
    if not isinstance(storage_type, _StorageType) or not isinstance(location, str) or \
            type(numel) is not int or numel < 0 or not isinstance(key, str) or \
            not key.isalnum():
        raise _Malformed(f'a storage reference {pid!r:.120} is not one torch.save writes')
    return storage_type.dtype, key, numel


def _read_zip(stream: BinaryIO, size: int, source: str) -> object:
    try:
        archive = zipfile.ZipFile(stream)
        records = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as err:
        raise CheckpointError(f'Could not read checkpoint {source}: the zip archive is '
                              f'truncated or corrupt ({err})') from None
    unpacked = sum(record.file_size for record in records)
    if unpacked > size:
        raise CheckpointError(f'Refused to load checkpoint {source}: its records unpack to '
                              f'{unpacked} bytes, more than the {size} bytes of the file '
                              f'(torch.save stores records uncompressed)')
    pickles = [r.filename for r in records if r.filename.count('/') == 1
               and r.filename.endswith('/data.pkl')]
    if len(pickles) != 1:
        raise CheckpointError(f'Could not read checkpoint {source}: it is a zip archive but '
                              f'not one written by torch.save (no single <name>/data.pkl)')
    prefix = pickles[0][:-len('data.pkl')]
    names = {r.filename for r in records}
    if prefix + 'byteorder' in names and archive.read(prefix + 'byteorder') != b'little':
        raise CheckpointError(f'Could not read checkpoint {source}: it was written on a '
                              f'big-endian machine, which is not supported')
    storages: dict[str, _Storage] = {}

    def load_storage(pid: tuple) -> _Storage:
        dtype, key, numel = _storage_pid(pid, legacy=False)
        if key not in storages:
            name = f'{prefix}data/{key}'
            if name not in names:
                raise _Malformed(f'a storage refers to the missing record {name}')
            nbytes = numel * torch.empty(0, dtype=dtype).element_size()
            record = archive.getinfo(name)
            if record.file_size != nbytes:
                raise _Malformed(f'record {name} holds {record.file_size} bytes, but its '
                                 f'{dtype} storage of {numel} elements needs {nbytes}')
            with archive.open(record) as member:
                storages[key] = _Storage(_untyped(_read_into(member, nbytes, source)), dtype,
                                         numel)
        storage = storages[key]
        if storage.dtype is not dtype:
            raise _Malformed(f'record {key} is read as {storage.dtype} and as {dtype}')
        return storage

    return _Unpickler(io.BytesIO(archive.read(pickles[0])), load_storage).load()


def _read_legacy(stream: BinaryIO, size: int, source: str) -> object:
    header = _Unpickler(stream, None)
    if header.load() != _LEGACY_MAGIC or header.load() != _LEGACY_PROTOCOL:
        raise CheckpointError(f'Could not read checkpoint {source}: it is a pickle, but not '
                              f'one written by torch.save')
    sys_info = header.load()
    if not isinstance(sys_info, dict) or sys_info.get('little_endian') is not True:
        raise CheckpointError(f'Could not read checkpoint {source}: it was written on a '
                              f'big-endian machine, which is not supported')
    pending: dict[str, tuple[_Storage, bytearray]] = {}
    declared = 0

    def load_storage(pid: tuple) -> _Storage:
        nonlocal declared
        dtype, key, numel = _storage_pid(pid, legacy=True)
        if key not in pending:
            nbytes = numel * torch.empty(0, dtype=dtype).element_size()
            declared += nbytes
            if declared > size:
                raise _Malformed(f'its storages declare {declared} bytes, more than the '
                                 f'{size} bytes of the file')
            buffer = bytearray(nbytes)
            pending[key] = (_Storage(_untyped(buffer), dtype, numel), buffer)
        return pending[key][0]

    result = _Unpickler(stream, load_storage).load()
    keys = _Unpickler(stream, None).load()
    if not isinstance(keys, list) or sorted(keys) != sorted(pending):
        raise CheckpointError(f'Could not read checkpoint {source}: its storage list does not '
                              f'match the storages its pickle uses')
    for key in keys:
        storage, buffer = pending[key]
        count = stream.read(8)
        if len(count) != 8 or struct.unpack('<q', count)[0] != storage.numel:
            raise CheckpointError(f'Could not read checkpoint {source}: the file is truncated '
                                  f'or corrupt (storage {key} has the wrong size)')
        buffer[:] = _read_into(stream, len(buffer), source)
    return result


def decode_torch_file(stream: BinaryIO, size: int, source: str) -> object:
    """Unpickle a ``torch.save`` file (zip archive or legacy pickle) without running code.

    Args:
        stream: The file, opened in binary mode, positioned at its start; seekable.
        size: Its size in bytes (bounds what its records may unpack to).
        source: Names the file in errors (quoted by the caller).

    Returns:
        What was saved, with CPU tensors.

    Raises:
        CheckpointError: the pickle needs a global off :data:`ALLOWED_GLOBALS`, builds
            something those may not build, or the file is truncated, corrupt or not a torch
            file.
    """
    head = stream.read(4)
    stream.seek(0)
    try:
        if head.startswith(b'PK\x03\x04'):
            obj = _read_zip(stream, size, source)
        elif len(head) > 1 and head[0] == 0x80 and 2 <= head[1] <= 5:
            obj = _read_legacy(stream, size, source)
        else:
            raise CheckpointError(f'Could not read checkpoint {source}: it is neither a '
                                  f'torch.save file nor a safetensors file')
        return _finalize(obj, {})
    except CheckpointError:
        raise
    except _Refused as err:
        raise CheckpointError(
            f'Refused to load checkpoint {source}: its pickle needs {err}, which is not on '
            f'the allow-list of plain weights and MMEngine training state (loading it could '
            f'run code)') from None
    except _Malformed as err:
        raise CheckpointError(f'Refused to load checkpoint {source}: {err}') from None
    except RecursionError:
        raise CheckpointError(f'Refused to load checkpoint {source}: it is nested too deeply '
                              f'to be a checkpoint') from None
    except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, UnicodeDecodeError,
            struct.error, ValueError, TypeError, RuntimeError, MemoryError,
            OverflowError, IndexError, KeyError, AttributeError) as err:
        # Anything the unpickler itself raises on damaged bytes.
        detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f'Could not read checkpoint {source}: the file is truncated or '
                              f'corrupt ({type(err).__name__}: {detail[:200]})') from None
