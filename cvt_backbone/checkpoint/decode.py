"""Decode ``torch.save`` files into a closed set of values: no unpickling, no code run.

The pickle in a torch file is a program for a stack machine. This module walks its opcodes
(:func:`pickletools.genops`, which only parses) and runs them on a machine of its own that
knows exactly the names of :data:`ALLOWED_GLOBALS` and defines itself what calling each one
means. No class is looked up, no ``__reduce__``/``__setstate__`` runs, and nothing a file
names can reach an object another read uses: each read builds its own values.

A decoded checkpoint holds only these types (anything else is refused by name):

* ``None``, ``bool``, ``int`` (at most 1024 bits), ``float``, ``complex``, ``str``, ``bytes``;
* ``tuple``, ``list``, ``dict``, ``collections.OrderedDict``, ``collections.Counter``
  (int counts), ``set``, ``frozenset``, ``torch.Size``; dict keys and set items are
  ``str``, ``int``, ``float``, ``bool``, ``None`` or ``bytes``; no container contains
  itself, none is nested more than :data:`MAX_DEPTH` deep;
* dense CPU ``torch.Tensor`` / ``torch.nn.Parameter`` of the dtypes of
  :data:`STORAGE_DTYPES`, viewing no element outside a storage as large as its record,
  and never more elements than that storage (no stride-0 or overlapping expansion);
  ``torch.dtype``, ``torch.device``;
* numpy arrays and scalars of the plain dtypes :data:`NUMPY_DTYPES`;
* MMEngine's ``HistoryBuffer``, rebuilt from two checked 1-D arrays.

A state dict's ``_metadata`` keeps only the integer ``version`` of each module: load flags
(``assign`` and the like) are never taken from a file. Every read has a budget: the zip
records must be stored uncompressed (as ``torch.save`` writes them), unique and sized
alike in their local and central headers, and unpack to no more than the file; the decoded
tree, counted with every shared reference, may hold at most ``4 x pickle bytes + 10^5``
values and ``4 x file bytes + 1 MiB`` of tensor and array data. Both formats of
``torch.save`` are read: the zip archive (torch >= 1.6) and the older single-pickle format;
big-endian files are refused. Every failure is a :class:`CheckpointError`.
"""
from __future__ import annotations

import io
import math
import pickletools
import reprlib
import struct
import zipfile
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator
from typing import BinaryIO

import numpy as np
import torch

from ..errors import CheckpointError

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
#: How deeply containers may nest (readers of checkpoints recurse into them).
MAX_DEPTH = 100
MAX_INT_BITS = 1024

_LEGACY_MAGIC = 0x1950a86a20f9469cfc6c
_LEGACY_PROTOCOL = 1001
_CHUNK = 1 << 24
_LINE_LIMIT = 1 << 20
#: Python 2 and numpy 1 module names pickles may use, and what they are today.
_MODULE_ALIASES = {'__builtin__': 'builtins', 'exceptions': 'builtins',
                   'numpy.core.multiarray': 'numpy._core.multiarray'}
_KEY_TYPES = (str, int, float, bool, type(None), bytes)
_ATOMS = (*_KEY_TYPES, complex, torch.dtype, torch.device)
_CONTAINERS = (list, tuple, dict, OrderedDict, Counter, set, frozenset, torch.Size)
_NUMPY_SCALARS = tuple(np.dtype(name).type for name in NUMPY_DTYPES)
_HISTORY_BUFFER = ('mmengine.logging.history_buffer', 'HistoryBuffer')
_STATISTICS = ('min', 'max', 'current', 'mean')
_COMPRESSION = {zipfile.ZIP_DEFLATED: 'deflate', zipfile.ZIP_BZIP2: 'bzip2',
                zipfile.ZIP_LZMA: 'lzma'}


class _Refused(Exception):
    """The file is readable but holds something a checkpoint may not."""


class _Corrupt(Exception):
    """The file is not a well-formed torch file."""


class _Global:
    """A name from :data:`ALLOWED_GLOBALS`, as the pickle pushed it (one per GLOBAL)."""

    __slots__ = ('key', )

    def __init__(self, key: tuple[str, str]) -> None:
        self.key = key

    def __repr__(self) -> str:
        return '.'.join(self.key)


class _Pending:
    """A value that a BUILD opcode completes: a numpy dtype or array, a HistoryBuffer."""

    __slots__ = ('kind', 'arg', 'value', 'done')

    def __init__(self, kind: str, arg: object = None) -> None:
        self.kind, self.arg, self.value, self.done = kind, arg, None, False


class _Storage:
    """One record of this read: untyped bytes, the dtype they hold and how many."""

    __slots__ = ('untyped', 'dtype', 'numel')

    def __init__(self, buffer: bytearray, dtype: torch.dtype, numel: int) -> None:
        self.untyped = (torch.frombuffer(buffer, dtype=torch.uint8).untyped_storage()
                        if buffer else torch.UntypedStorage(0))
        self.dtype, self.numel = dtype, numel


def _describe(value: object) -> str:
    if isinstance(value, _Global):
        return f'the name {value!r}'
    if isinstance(value, _Pending):
        return f'a {value.kind} used before its state was set'
    return type(value).__name__


def _shown(value: object) -> str:
    """A short one-line repr for error messages (tensors and containers print on many)."""
    return ' '.join(reprlib.repr(value).split())


def _resolve(value: object) -> object:
    return value.value if isinstance(value, _Pending) and value.done else value


def _args(args: object, name: str, least: int, most: int) -> list:
    if type(args) is not tuple or not least <= len(args) <= most:
        raise _Refused(f'its pickle calls {name} with {_describe(args)} {_shown(args)}')
    return [*args, *[None] * (most - len(args))]


def _ints(value: object, what: str) -> tuple[int, ...]:
    if (not isinstance(value, (tuple, list)) or len(value) > 64
            or not all(type(v) is int and 0 <= v < 1 << 62 for v in value)):
        raise _Refused(f'a tensor {what} is {_shown(value)}, not a sequence of integers >= 0')
    return tuple(value)


def _key(key: object) -> object:
    if type(key) not in _KEY_TYPES:
        raise _Refused(f'a dict key or set item is {_describe(key)}: keys may only be str, '
                       f'int, float, bool, None or bytes')
    return key


# --------------------------------------------------------------------------- what names mean
def _tensor(args: tuple, name: str = '_rebuild_tensor_v2') -> torch.Tensor:
    v3 = name.endswith('v3')
    storage, offset, size, stride, requires_grad, hooks, *rest = _args(
        args, name, 6 + v3, 7 + v3)
    dtype, metadata = rest if v3 else (None, rest[0])
    if not isinstance(storage, _Storage):
        raise _Refused(f'a tensor was rebuilt from {_describe(storage)}, not a storage')
    size, stride = _ints(size, 'size'), _ints(stride, 'stride')
    if type(offset) is not int or not 0 <= offset < 1 << 62 or len(size) != len(stride):
        raise _Refused(f'a tensor has offset {_shown(offset)}, size {size} and stride {stride}')
    if (type(hooks) not in (dict, OrderedDict) or hooks or metadata
            or type(requires_grad) is not bool):
        raise _Refused('a tensor carries hooks or metadata (plain weights have neither)')
    if v3 and dtype is not storage.dtype:
        raise _Refused(f'a {_shown(dtype)} tensor views a {storage.dtype} storage')
    numel = math.prod(size)
    extent = offset + sum((n - 1) * s for n, s in zip(size, stride)) + 1 if numel else 0
    if numel > storage.numel or extent > storage.numel:
        raise _Refused(f'a tensor of shape {size} and stride {stride} claims {numel} elements '
                       f'of a storage that has {storage.numel}: a tensor may not hold more '
                       f'elements than its storage')
    tensor = torch.empty(0, dtype=storage.dtype).set_(storage.untyped, offset, size, stride)
    return tensor.requires_grad_(requires_grad and (tensor.is_floating_point()
                                                    or tensor.is_complex()))


def _parameter(args: tuple) -> torch.nn.Parameter:
    data, requires_grad, hooks = _args(args, '_rebuild_parameter', 3, 3)
    if type(data) is not torch.Tensor or type(requires_grad) is not bool or hooks:
        raise _Refused('a Parameter was rebuilt from something other than a plain tensor')
    return torch.nn.Parameter(data, requires_grad and (data.is_floating_point()
                                                      or data.is_complex()))


def _numpy_dtype(args: tuple) -> _Pending:
    name, align, copy = _args(args, 'numpy.dtype', 1, 3)
    if name not in NUMPY_DTYPES or type(align or False) is not bool \
            or type(copy or False) is not bool:
        raise _Refused(f'numpy dtype {_shown(name)} is not one of the plain numeric dtypes '
                       f'{NUMPY_DTYPES}')
    return _Pending('numpy dtype', name)


def _build_numpy_dtype(name: str, state: object) -> np.dtype:
    # A plain numeric dtype pickles (3, byteorder, None, None, None, -1, -1, 0): no
    # subarray, no field names, no fields, no fixed size, alignment or flags.
    if (type(state) is not tuple or len(state) != 8 or state[0] != 3
            or state[1] not in ('<', '>', '|', '=') or state[2:] != (None, None, None, -1, -1,
                                                                    0)):
        raise _Refused(f'numpy dtype {name!r} has the state {_shown(state)}, which only '
                       f'structured or object dtypes have')
    dtype = np.dtype(name)
    return dtype.newbyteorder(state[1]) if state[1] in '<>' else dtype


def _reconstruct(args: tuple) -> _Pending:
    subtype, _, _ = _args(args, 'numpy _reconstruct', 3, 3)
    if not isinstance(subtype, _Global) or subtype.key != ('numpy', 'ndarray'):
        raise _Refused(f'numpy _reconstruct was asked for {_describe(subtype)}, not ndarray')
    return _Pending('numpy array')


def _build_numpy_array(_: object, state: object) -> np.ndarray:
    if type(state) is not tuple or len(state) != 5:
        raise _Refused(f'a numpy array has the state {_describe(state)}')
    _, shape, dtype, is_fortran, raw = state
    shape = _ints(shape, 'shape')
    if not isinstance(dtype, np.dtype) or type(is_fortran) is not bool or type(raw) is not bytes:
        raise _Refused(f'a numpy array is not a plain numeric array ({_describe(dtype)}, '
                       f'{_describe(raw)})')
    if len(raw) != math.prod(shape) * dtype.itemsize:
        raise _Refused(f'a numpy array of shape {shape} and dtype {dtype} holds {len(raw)} '
                       f'bytes')
    return np.frombuffer(raw, dtype).reshape(shape, order='F' if is_fortran else 'C').copy()


def _numpy_scalar(args: tuple) -> np.generic:
    dtype, raw = _args(args, 'numpy scalar', 2, 2)
    if not isinstance(dtype, np.dtype) or type(raw) is not bytes or len(raw) != dtype.itemsize:
        raise _Refused('a numpy scalar is not a plain numeric scalar')
    return np.frombuffer(raw, dtype)[0]


def _build_history_buffer(_: object, state: object) -> object:
    from mmengine.logging import HistoryBuffer

    if type(state) is not dict or set(state) != {'max_length', '_log_history',
                                                 '_count_history', 'statistics_methods'}:
        raise _Refused('a HistoryBuffer has a state that MMEngine does not write')
    log, count, max_length = (state[k] for k in ('_log_history', '_count_history',
                                                  'max_length'))
    statistics = state['statistics_methods']
    if (type(log) is not np.ndarray or type(count) is not np.ndarray or log.ndim != 1
            or log.shape != count.shape or type(max_length) is not int or max_length < 1
            or type(statistics) is not dict or not set(statistics.values()) <= set(_STATISTICS)):
        raise _Refused('a HistoryBuffer does not hold two 1-D arrays of equal length')
    return HistoryBuffer(log, count, max_length)  # the default statistics, not the file's


def _getattr(args: tuple) -> str:
    """``getattr(HistoryBuffer, 'min')`` and co: how a HistoryBuffer pickles its statistics."""
    owner, name = _args(args, 'getattr', 2, 2)
    if isinstance(owner, _Global) and owner.key == _HISTORY_BUFFER and name in _STATISTICS:
        return name
    owner = 'HistoryBuffer' if isinstance(owner, _Global) and owner.key == _HISTORY_BUFFER \
        else _describe(owner)
    raise _Refused(f'its pickle needs getattr({owner}, {_shown(name)}), which is not on the '
                   f'list of plain weights and MMEngine training state')


def _collection(kind: type) -> Callable[[tuple], object]:
    def build(args: tuple) -> object:
        items, = _args(args, kind.__name__, 0, 1)
        if type(items or []) not in (list, tuple):
            raise _Refused(f'{kind.__name__} was built from {_describe(items)}')
        return kind(_key(item) for item in items or ())
    return build


def _counter(args: tuple) -> Counter:
    counts, = _args(args, 'Counter', 0, 1)
    if type(counts or {}) is not dict or not all(type(v) is int for v in (counts or {}).values()):
        raise _Refused('a Counter does not count with integers')
    return Counter(counts or {})


def _only(name: str, arity: int, make: Callable, *types: type) -> Callable[[tuple], object]:
    def build(args: tuple) -> object:
        values = _args(args, name, 0 if not types else 1, arity)
        if not all(v is None or type(v) in types for v in values) or not types and values:
            raise _Refused(f'{name} was called with {_shown(args)}')
        return make(*(v for v in values if v is not None))
    return build


def _encode(args: tuple) -> bytes:
    text, encoding = _args(args, '_codecs.encode', 2, 2)
    if type(text) is not str or encoding != 'latin1':
        raise _Refused('_codecs.encode may only turn latin1 text into bytes')
    return text.encode('latin1')


#: Every name a checkpoint may use, and what calling it (REDUCE) means; ``None``: a name
#: that is only ever an argument (a storage type, ``numpy.ndarray``, ``HistoryBuffer``).
ALLOWED_GLOBALS: dict[tuple[str, str], Callable[[tuple], object] | torch.dtype | None] = {
    ('collections', 'OrderedDict'): _only('OrderedDict', 0, OrderedDict),
    ('collections', 'Counter'): _counter,
    ('builtins', 'set'): _collection(set),
    ('builtins', 'frozenset'): _collection(frozenset),
    ('builtins', 'complex'): _only('complex', 2, complex, int, float),
    ('builtins', 'bytes'): _only('bytes', 0, bytes),
    ('_codecs', 'encode'): _encode,
    ('torch._utils', '_rebuild_tensor_v2'): _tensor,
    ('torch._utils', '_rebuild_tensor_v3'): lambda args: _tensor(args, '_rebuild_tensor_v3'),
    ('torch._utils', '_rebuild_parameter'): _parameter,
    ('torch', 'Size'): lambda args: torch.Size(_ints(_args(args, 'torch.Size', 1, 1)[0],
                                                     'size')),
    ('torch', 'device'): _only('torch.device', 2, torch.device, str, int),
    **{('torch', name): None for name in STORAGE_DTYPES},
    **{('torch', str(dtype)[6:]): dtype for dtype in STORAGE_DTYPES.values()},
    ('numpy._core.multiarray', '_reconstruct'): _reconstruct,
    ('numpy._core.multiarray', 'scalar'): _numpy_scalar,
    ('numpy', 'ndarray'): None,
    ('numpy', 'dtype'): _numpy_dtype,
    _HISTORY_BUFFER: None,
    ('builtins', 'getattr'): _getattr,
}
_BUILDERS = {'numpy dtype': _build_numpy_dtype, 'numpy array': _build_numpy_array,
             'HistoryBuffer': _build_history_buffer}


def _build(target: object, state: object) -> object:
    """BUILD: only a value this decoder left unfinished, or a state dict's ``_metadata``."""
    if isinstance(target, _Pending) and not target.done:
        target.value, target.done = _BUILDERS[target.kind](target.arg, state), True
        return target.value
    if type(target) is OrderedDict and not hasattr(target, '_metadata') \
            and type(state) is dict and set(state) == {'_metadata'}:
        metadata = state['_metadata']
        target._metadata = OrderedDict(
            (prefix, {'version': entry['version']} if type(entry.get('version')) is int
             else {}) for prefix, entry in (metadata.items() if type(metadata) in (
                 dict, OrderedDict) else ()) if type(prefix) is str and type(entry) is dict)
        return target
    raise _Refused(f'its pickle sets the state of {_describe(target)} to {_describe(state)}, '
                   f'which a checkpoint value never has')


# --------------------------------------------------------------------------- the machine
_SCALAR_OPS = {'INT', 'BININT', 'BININT1', 'BININT2', 'LONG', 'LONG1', 'LONG4', 'FLOAT',
               'BINFLOAT', 'UNICODE', 'SHORT_BINUNICODE', 'BINUNICODE', 'BINUNICODE8',
               'SHORT_BINBYTES', 'BINBYTES', 'BINBYTES8'}
_PY2_STRINGS = {'STRING', 'BINSTRING', 'SHORT_BINSTRING'}
_CONSTANTS = {'NONE': None, 'NEWTRUE': True, 'NEWFALSE': False}
_MARKED = {'TUPLE', 'LIST', 'DICT', 'FROZENSET', 'APPENDS', 'SETITEMS', 'ADDITEMS'}


def _target(stack: list, kinds: tuple[type, ...], name: str) -> object:
    if type(stack[-1]) not in kinds:
        raise _Refused(f'its pickle runs {name} on {_describe(stack[-1])}')
    return stack[-1]


def _setitems(target: dict, items: list) -> None:
    if len(items) % 2:
        raise _Corrupt('SETITEMS has a key without a value')
    for i in range(0, len(items), 2):
        target[_key(items[i])] = items[i + 1]


def _run(ops: Iterator, load_storage: Callable[[object], _Storage] | None, budget: int
         ) -> object:
    """Run one pickle (up to its STOP) on a stack machine of closed values."""
    shared = 0  # items of containers referenced again: refuses a memo bomb early
    stack: list = []
    marks: list[list] = []
    memo: dict[int, object] = {}
    for op, arg, pos in ops:
        name = op.name
        try:
            if name in _SCALAR_OPS or name in _PY2_STRINGS:
                if name in _PY2_STRINGS:  # Python 2 str, read as torch.load does (utf-8)
                    arg = arg.encode('latin-1').decode('utf-8')
                if type(arg) is int and arg.bit_length() > MAX_INT_BITS:
                    raise _Refused(f'an integer has {arg.bit_length()} bits (at most '
                                   f'{MAX_INT_BITS})')
                stack.append(arg)
            elif name in _CONSTANTS:
                stack.append(_CONSTANTS[name])
            elif name in ('PROTO', 'FRAME'):
                pass
            elif name == 'MARK':
                marks.append(stack)
                stack = []
            elif name in _MARKED:
                items = [_resolve(item) for item in stack]
                stack = marks.pop()
                if name == 'TUPLE':
                    stack.append(tuple(items))
                elif name == 'LIST':
                    stack.append(items)
                elif name == 'DICT':
                    stack.append({})
                    _setitems(stack[-1], items)
                elif name == 'FROZENSET':
                    stack.append(frozenset(_key(item) for item in items))
                elif name == 'APPENDS':
                    _target(stack, (list, ), name).extend(items)
                elif name == 'SETITEMS':
                    _setitems(_target(stack, (dict, OrderedDict), name), items)
                else:
                    _target(stack, (set, ), name).update(_key(item) for item in items)
            elif name == 'POP_MARK':
                stack = marks.pop()
            elif name == 'POP':
                stack.pop()
            elif name == 'DUP':
                stack.append(stack[-1])
            elif name == 'EMPTY_TUPLE':
                stack.append(())
            elif name in ('TUPLE1', 'TUPLE2', 'TUPLE3'):
                count = int(name[-1])
                if len(stack) < count:
                    raise IndexError(name)
                items = tuple(_resolve(item) for item in stack[-count:])
                stack[-count:] = [items]
            elif name in ('EMPTY_LIST', 'EMPTY_DICT', 'EMPTY_SET'):
                stack.append({'EMPTY_LIST': list, 'EMPTY_DICT': dict, 'EMPTY_SET': set}[name]())
            elif name == 'APPEND':
                item = _resolve(stack.pop())
                _target(stack, (list, ), name).append(item)
            elif name == 'SETITEM':
                items = [_resolve(item) for item in stack[-2:]]
                del stack[-2:]
                _setitems(_target(stack, (dict, OrderedDict), name), items)
            elif name in ('PUT', 'BINPUT', 'LONG_BINPUT', 'MEMOIZE'):
                memo[len(memo) if name == 'MEMOIZE' else arg] = stack[-1]
            elif name in ('GET', 'BINGET', 'LONG_BINGET'):
                if arg not in memo:
                    raise _Corrupt(f'{name} at byte {pos} refers to memo entry {arg}, which '
                                   f'was never stored')
                stack.append(_resolve(memo[arg]))
                shared += len(stack[-1]) if type(stack[-1]) in _CONTAINERS else 0
                if shared > budget:
                    raise _Refused(f'it holds more than {budget} values, counting every '
                                   f'shared reference (the budget of a pickle of its size)')
            elif name in ('GLOBAL', 'STACK_GLOBAL'):
                if name == 'GLOBAL':
                    module, _, attr = arg.partition(' ')
                else:
                    attr, module = stack.pop(), stack.pop()
                    if type(module) is not str or type(attr) is not str:
                        raise _Refused(f'STACK_GLOBAL names {_describe(module)}.'
                                       f'{_describe(attr)}')
                key = (_MODULE_ALIASES.get(module, module), attr)
                if key not in ALLOWED_GLOBALS:
                    raise _Refused(f'its pickle needs {".".join(key):.120}, which is not on '
                                   f'the list of plain weights and MMEngine training state '
                                   f'(loading it could run code)')
                known = ALLOWED_GLOBALS[key]
                stack.append(known if isinstance(known, torch.dtype) else _Global(key))
            elif name in ('REDUCE', 'NEWOBJ'):
                args = stack.pop()
                func = stack.pop()
                if name == 'NEWOBJ' and isinstance(func, _Global) and \
                        func.key == _HISTORY_BUFFER and type(args) is tuple and not args:
                    stack.append(_Pending('HistoryBuffer'))
                elif name == 'REDUCE' and isinstance(func, _Global) and \
                        callable(ALLOWED_GLOBALS.get(func.key)):
                    stack.append(ALLOWED_GLOBALS[func.key](args))
                else:
                    raise _Refused(f'its pickle calls {_describe(func)} ({name}), which no '
                                   f'checkpoint value is made by')
            elif name == 'BUILD':
                state = _resolve(stack.pop())
                stack[-1] = _build(stack[-1], state)
            elif name == 'BINPERSID':
                if load_storage is None:
                    raise _Refused('its pickle refers to a storage where none may be')
                stack.append(load_storage(stack.pop()))
            elif name == 'STOP':
                if marks or len(stack) != 1:
                    raise _Corrupt(f'the pickle stops with {len(stack)} values on its stack')
                return _resolve(stack[0])
            else:
                raise _Refused(f'its pickle uses the opcode {name} (at byte {pos}), which '
                               f'torch.save does not write')
        except IndexError:
            raise _Corrupt(f'{name} at byte {pos} finds too few values on the stack') from None
    raise _Corrupt('the pickle ends before STOP')


def _measure(root: object, max_nodes: int, max_bytes: int) -> None:
    """Check the decoded tree: closed types, no cycles, depth, size with every reference.

    Each container is measured once (so shared references cost no time) but counted as
    often as it is referenced, which bounds what any walk or copy of the result costs.
    """
    done: dict[int, tuple[int, int, int]] = {}  # id -> values, data bytes, height
    frames: list[list] = []

    def visit(value: object) -> tuple[int, int, int] | None:
        kind = type(value)
        if kind in _CONTAINERS:
            key = id(value)
            if key in done:
                return done[key]
            if any(frame[0] is value for frame in frames):
                raise _Refused(f'a {kind.__name__} contains itself')
            if len(frames) >= MAX_DEPTH:
                raise _Refused(f'it is nested more than {MAX_DEPTH} deep')
            items = value.items() if isinstance(value, dict) else value
            frames.append([value, iter(items), 1, 0, 0])
            return None
        if kind in (torch.Tensor, torch.nn.Parameter):
            return 1, value.numel() * value.element_size(), 0
        if kind is np.ndarray:
            return 1, value.nbytes, 0
        if kind in _ATOMS or kind in _NUMPY_SCALARS:
            return 1, 0, 0
        if kind.__module__ == _HISTORY_BUFFER[0] and kind.__name__ == _HISTORY_BUFFER[1]:
            return 3, value._log_history.nbytes + value._count_history.nbytes, 0
        raise _Refused(f'its pickle leaves {_describe(value)} in the checkpoint, which is not '
                       f'a checkpoint value')

    stats = visit(root)
    while frames:
        frame = frames[-1]
        if stats is not None:
            frame[2] += stats[0]
            frame[3] += stats[1]
            frame[4] = max(frame[4], stats[2] + 1)
            if frame[2] > max_nodes:
                raise _Refused(f'it holds more than {max_nodes} values, counting every '
                               f'shared reference (the budget of a pickle of its size)')
            if frame[3] > max_bytes:
                raise _Refused(f'its tensors and arrays hold more than {max_bytes} bytes, '
                               f'counting every shared reference (the budget of a file of '
                               f'its size)')
        item = next(frame[1], frame)
        if item is frame:
            frames.pop()
            stats = done[id(frame[0])] = (frame[2], frame[3], frame[4])
        elif isinstance(frame[0], dict):  # a (key, value) pair; keys are checked atoms
            frame[2] += 1
            stats = visit(item[1])
        else:
            stats = visit(item)


def _decode(ops: Iterator, load_storage: Callable | None, pickle_size: int,
            file_size: int) -> object:
    budget = 4 * pickle_size + 100_000
    value = _run(ops, load_storage, budget)
    _measure(value, budget, 4 * file_size + (1 << 20))
    return value


# --------------------------------------------------------------------------- formats
class _Bounded:
    """The file as :func:`pickletools.genops` reads it: no read past its end, short lines."""

    def __init__(self, stream: BinaryIO, size: int) -> None:
        self.stream, self.size = stream, size

    def tell(self) -> int:
        return self.stream.tell()

    def read(self, count: int) -> bytes:
        return self.stream.read(max(0, min(count, self.size - self.stream.tell())))

    def readline(self) -> bytes:
        return self.stream.readline(_LINE_LIMIT)


def _read_into(stream: BinaryIO, buffer: bytearray, source: str) -> None:
    view, done = memoryview(buffer), 0
    while done < len(buffer):
        chunk = stream.read(min(_CHUNK, len(buffer) - done))
        if not chunk:
            raise _Corrupt(f'a storage ends after {done} of {len(buffer)} bytes')
        view[done:done + len(chunk)] = chunk
        done += len(chunk)


def _storage_pid(pid: object, legacy: bool) -> tuple[torch.dtype, str, int]:
    """Check a storage's persistent id; return its dtype, record key and element count."""
    fields = 6 if legacy else 5
    if type(pid) is not tuple or len(pid) != fields or pid[0] != 'storage':
        raise _Refused(f'its pickle refers to the persistent object {_shown(pid)}')
    storage_type, key, location, numel = pid[1:5]
    if legacy and pid[5] is not None:
        raise _Refused('a storage is a view of another (the format of torch < 1.0)')
    if (not isinstance(storage_type, _Global) or storage_type.key[1] not in STORAGE_DTYPES
            or type(location) is not str or type(numel) is not int or not 0 <= numel < 1 << 62
            or type(key) is not str or not key.isalnum()):
        raise _Refused(f'a storage reference {_shown(pid)} is not one torch.save writes')
    return STORAGE_DTYPES[storage_type.key[1]], key, numel


def _check_records(stream: BinaryIO, records: list[zipfile.ZipInfo], size: int) -> None:
    names = [record.filename for record in records]
    if len(set(names)) != len(names):
        raise _Refused('its zip archive holds two records of the same name')
    for record in records:
        if record.compress_type != zipfile.ZIP_STORED:
            method = _COMPRESSION.get(record.compress_type, f'method {record.compress_type}')
            raise _Refused(f'record {record.filename} is compressed with {method}, but '
                           f'torch.save stores every record uncompressed')
        if record.flag_bits & 1:
            raise _Refused(f'record {record.filename} is encrypted')
        stream.seek(record.header_offset)
        local = struct.unpack('<4s2B4HL2L2H', stream.read(30))
        extra = stream.read(local[10] + local[11])[local[10]:]
        told = [local[7:10]]  # CRC, compressed and full size
        if local[3] & 8:  # they follow the data, in a descriptor (as torch.save writes them)
            stream.seek(record.compress_size, 1)
            tail = stream.read(24)
            tail = tail[4:] if tail.startswith(b'PK\x07\x08') else tail
            told = [struct.unpack(layout, tail[:struct.calcsize(layout)])
                    for layout in ('<3L', '<LQQ') if len(tail) >= struct.calcsize(layout)]
        while len(extra) >= 20 and 0xFFFFFFFF in local[8:10]:  # zip64: sizes in an extra
            tag, length = struct.unpack('<2H', extra[:4])
            if tag == 1:
                told = [(local[7], *struct.unpack('<2Q', extra[4:20])[::-1])]
            extra = extra[4 + length:]
        if (local[0] != b'PK\x03\x04' or local[4] != record.compress_type
                or (record.CRC, record.compress_size, record.file_size) not in told
                or record.compress_size != record.file_size):
            raise _Refused(f'record {record.filename} has a CRC, sizes or a method in its '
                           f'local header that differ from the central directory')
    unpacked = sum(record.file_size for record in records)
    if unpacked > size:
        raise _Refused(f'its records unpack to {unpacked} bytes, more than the {size} bytes '
                       f'of the file')


def _read_zip(stream: BinaryIO, size: int) -> object:
    try:
        archive = zipfile.ZipFile(stream)
        records = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as err:
        raise _Corrupt(f'the zip archive is truncated or corrupt: {err}') from None
    _check_records(stream, records, size)
    pickles = [r.filename for r in records if r.filename.count('/') == 1
               and r.filename.endswith('/data.pkl')]
    if len(pickles) != 1:
        raise _Corrupt('it is a zip archive but not one written by torch.save (no single '
                       '<name>/data.pkl)')
    prefix = pickles[0][:-len('data.pkl')]
    names = set(archive.namelist())
    if prefix + 'byteorder' in names and \
            archive.read(prefix + 'byteorder') != b'little':
        raise _Refused('it was written on a big-endian machine, which is not supported')
    storages: dict[str, _Storage] = {}

    def load_storage(pid: object) -> _Storage:
        dtype, key, numel = _storage_pid(pid, legacy=False)
        if key not in storages:
            name = f'{prefix}data/{key}'
            nbytes = numel * torch.empty(0, dtype=dtype).element_size()
            if name not in names or archive.getinfo(name).file_size != nbytes:
                raise _Refused(f'record {name} is missing or does not hold the {nbytes} bytes '
                               f'of its {dtype} storage of {numel} elements')
            buffer = bytearray(nbytes)
            with archive.open(name) as member:
                _read_into(member, buffer, name)  # zipfile checks the CRC at the end
            storages[key] = _Storage(buffer, dtype, numel)
        if storages[key].dtype is not dtype or storages[key].numel != numel:
            raise _Refused(f'record {key} is read as two different storages')
        return storages[key]

    data = archive.read(pickles[0])
    return _decode(pickletools.genops(io.BytesIO(data)), load_storage, len(data), size)


def _read_legacy(stream: BinaryIO, size: int) -> object:
    bounded = _Bounded(stream, size)

    def decode(load_storage: Callable | None = None) -> object:
        return _decode(pickletools.genops(bounded), load_storage, size, size)

    if decode() != _LEGACY_MAGIC or decode() != _LEGACY_PROTOCOL:
        raise _Corrupt('it is a pickle, but not one written by torch.save')
    sys_info = decode()
    if type(sys_info) is not dict or sys_info.get('little_endian') is not True:
        raise _Refused('it was written on a big-endian machine, which is not supported')
    pending: dict[str, tuple[_Storage, bytearray]] = {}

    def load_storage(pid: object) -> _Storage:
        dtype, key, numel = _storage_pid(pid, legacy=True)
        if key not in pending:
            nbytes = numel * torch.empty(0, dtype=dtype).element_size()
            declared = nbytes + sum(len(buffer) for _, buffer in pending.values())
            if declared > size:
                raise _Refused(f'its storages declare {declared} bytes, more than the {size} '
                               f'bytes of the file')
            buffer = bytearray(nbytes)
            pending[key] = (_Storage(buffer, dtype, numel), buffer)
        if pending[key][0].dtype is not dtype or pending[key][0].numel != numel:
            raise _Refused(f'storage {key} is read as two different storages')
        return pending[key][0]

    result = decode(load_storage)
    keys = decode()
    if (type(keys) is not list or not all(type(key) is str for key in keys)
            or sorted(keys) != sorted(pending)):
        raise _Corrupt('its storage list does not match the storages its pickle uses')
    for key in keys:
        storage, buffer = pending[key]
        count = stream.read(8)
        if len(count) != 8 or struct.unpack('<q', count)[0] != storage.numel:
            raise _Corrupt(f'storage {key} has the wrong size')
        _read_into(stream, buffer, key)
    return result


def decode_torch_file(stream: BinaryIO, size: int, source: str) -> object:
    """Decode a ``torch.save`` file (zip archive or legacy pickle) into closed values.

    Args:
        stream: The file, opened in binary mode, positioned at its start; seekable.
        size: Its size in bytes (the budget of the read is proportional to it).
        source: Names the file in errors (quoted by the caller).

    Returns:
        What was saved, made only of the types listed in this module's docstring, with
        CPU tensors.

    Raises:
        CheckpointError: the file needs a name off :data:`ALLOWED_GLOBALS`, builds
            something those may not build, exceeds its budget, or is truncated, corrupt or
            not a torch file.
    """
    try:
        head = stream.read(4)
        stream.seek(0)
        if head.startswith(b'PK\x03\x04'):
            return _read_zip(stream, size)
        if len(head) > 1 and head[0] == 0x80 and 2 <= head[1] <= 5:
            return _read_legacy(stream, size)
        raise CheckpointError(f'Could not read checkpoint {source}: it is neither a '
                              f'torch.save file nor a safetensors file')
    except CheckpointError:
        raise
    except _Refused as err:
        raise CheckpointError(f'Refused to load checkpoint {source}: {err}') from None
    except _Corrupt as err:
        raise CheckpointError(f'Could not read checkpoint {source}: the file is truncated or '
                              f'corrupt ({err})') from None
    except Exception as err:  # noqa: BLE001 -- whatever damaged bytes make the parsers raise
        detail = str(err).strip().splitlines()[0] if str(err).strip() else ''
        raise CheckpointError(f'Could not read checkpoint {source}: the file is truncated or '
                              f'corrupt ({type(err).__name__}: {detail[:200]})') from None
