"""Decode ``torch.save`` files into a closed set of values: no unpickling, no code run.

The pickle in a torch file is a program for a stack machine: :class:`_Machine` runs its opcodes
(parsed by :func:`pickletools.genops`) knowing exactly the names of :data:`ALLOWED_GLOBALS` and
what calling each means; no class is looked up, no ``__reduce__`` or ``__setstate__`` runs, and
each read builds its own values, of the closed set docs/guarantees.md lists. A state dict's
``_metadata`` keeps only each module's int ``version`` (no load flag comes from a file). Zip
records must be as ``torch.save`` writes them (stored, unique, sized alike in both headers,
within the file); big-endian files are refused. Each read has one budget of memory, work, time
and tree size, charged as values are built (docs/decoder_budgets.md).
"""
from __future__ import annotations

import io
import math
import pickletools
import reprlib
import struct
import sys
import time
import zipfile
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import BinaryIO

import numpy as np
import torch

from ..errors import CheckpointError

#: Tensor dtypes by the storage class names ``torch.save`` pickles (``torch FloatStorage``).
STORAGE_DTYPES = {
    'DoubleStorage': torch.float64, 'FloatStorage': torch.float32, 'HalfStorage': torch.float16,
    'BFloat16Storage': torch.bfloat16, 'LongStorage': torch.int64, 'IntStorage': torch.int32,
    'ShortStorage': torch.int16, 'CharStorage': torch.int8, 'ByteStorage': torch.uint8,
    'BoolStorage': torch.bool, 'ComplexFloatStorage': torch.complex64,
    'ComplexDoubleStorage': torch.complex128}
#: numpy dtypes an array or scalar may have (``numpy.dtype`` pickles them by these names).
NUMPY_DTYPES = ('b1', 'i1', 'i2', 'i4', 'i8', 'u1', 'u2', 'u4', 'u8', 'f2', 'f4', 'f8')
MAX_DEPTH, MAX_INT_BITS = 100, 1024
#: Keys of one container that may be int, float, bool or None (their hashes are predictable).
MAX_PREDICTABLE_KEYS = 1024
#: Each budget of a read of ``n`` bytes, ``PER_BYTE * n + BASE`` (values: ``n`` of its pickle).
MEMORY_PER_BYTE, MEMORY_BASE = 64, 64 << 20
WORK_PER_BYTE, WORK_BASE = 16, 1 << 24
SECONDS_PER_BYTE, SECONDS_BASE = 1e-5, 10.0
VALUES_PER_BYTE, VALUES_BASE = 4, 100_000
DATA_PER_BYTE, DATA_BASE = 4, 1 << 20
#: Bytes charged per thing built; a container also its empty size, by kind its table and items.
_COSTS = {'slot': 12, 'mark': 80, 'node': 224, 'memo': 12, 'keyed memo': 128, 'object': 128,
          'tensor': 1024, 'storage': 512, 'array': 256, 'history': 4096, 'metadata': 512}
_ITEM_COSTS = {list: (256, 16), tuple: (0, 16), torch.Size: (0, 16), dict: (256, 56),
               Counter: (512, 64), OrderedDict: (256, 104), set: (256, 128), frozenset: (256, 128)}
_EMPTY_SIZES = {kind: sys.getsizeof(kind()) for kind in _ITEM_COSTS}
_ZIP_DIRECTORY_PER_BYTE = 16  # zipfile holds a ZipInfo per record
_TICK = 4096  # opcodes between checks of the deadline
_CHUNK, _LINE_LIMIT = 1 << 24, 1 << 20
_LEGACY_MAGIC, _LEGACY_PROTOCOL = 0x1950a86a20f9469cfc6c, 1001
#: Python 2 and numpy 1 module names pickles may use, and what they are today.
_MODULE_ALIASES = {'__builtin__': 'builtins', 'exceptions': 'builtins',
                   'numpy.core.multiarray': 'numpy._core.multiarray'}
_KEY_TYPES = (str, int, float, bool, type(None), bytes)
_ATOMS = (*_KEY_TYPES, complex, torch.dtype, torch.device)
_CONTAINERS = (list, tuple, dict, OrderedDict, Counter, set, frozenset, torch.Size)
_NUMPY_SCALARS = tuple(np.dtype(name).type for name in NUMPY_DTYPES)
_HISTORY_BUFFER = ('mmengine.logging.history_buffer', 'HistoryBuffer')
_STATISTICS = ('min', 'max', 'current', 'mean')


class _Refused(Exception):
    """The file is readable but holds something a checkpoint may not."""


class _Corrupt(Exception):
    """The file is not a well-formed torch file."""


class _Global(tuple):
    """A name of :data:`ALLOWED_GLOBALS`, ``(module, name)``, as the pickle pushed it."""

    def __repr__(self) -> str:
        return '.'.join(self)


class _Storage:
    """A storage of this read: its bytes, an untyped storage over them, their dtype and count."""

    __slots__ = ('buffer', 'untyped', 'dtype', 'numel')

    def __init__(self, buffer: bytearray, dtype: torch.dtype, numel: int) -> None:
        self.buffer, self.dtype, self.numel = buffer, dtype, numel
        self.untyped = (torch.frombuffer(buffer, dtype=torch.uint8).untyped_storage()
                        if buffer else torch.UntypedStorage(0))


class _Pending:
    """A numpy dtype or array or a HistoryBuffer, until a BUILD sets its ``value``."""

    __slots__ = ('kind', 'build', 'arg', 'value')

    def __init__(self, kind: str, build: Callable, arg: object = None) -> None:
        self.kind, self.build, self.arg, self.value = kind, build, arg, None


class _Node:
    """A container as the budget sees it: values and data bytes in it (every reference), height,
    predictable keys, first value no checkpoint may hold, sealed (in another: it never changes)."""

    __slots__ = ('value', 'values', 'data', 'height', 'predictable', 'foreign', 'sealed')

    def __init__(self, value: object) -> None:
        self.value, self.values, self.data, self.height = value, 1, 0, 1
        self.predictable, self.foreign, self.sealed = 0, None, False


class _Budget:
    """What one read of a file of ``size`` bytes may spend, charged before it is spent."""

    def __init__(self, size: int) -> None:
        self.size, self.ops = size, 0
        self.memory = self.memory_left = MEMORY_PER_BYTE * size + MEMORY_BASE
        self.work = self.work_left = WORK_PER_BYTE * size + WORK_BASE
        self.seconds = SECONDS_BASE + SECONDS_PER_BYTE * size
        self.deadline = time.monotonic() + self.seconds
        self.max_values = VALUES_PER_BYTE * size + VALUES_BASE  # of the pickle, once known
        self.max_data = DATA_PER_BYTE * size + DATA_BASE

    def spend(self, nbytes: int, what: str) -> None:
        self.memory_left -= nbytes
        if self.memory_left < 0:
            raise _Refused(f'decoding it needs more than {self.memory} bytes of memory (the '
                           f'budget of a file of {self.size} bytes), the last for {what}')

    def step(self, steps: int, what: str) -> None:
        self.work_left -= steps
        if self.work_left < 0:
            raise _Refused(f'decoding it takes more than {self.work} steps (the budget of a '
                           f'file of {self.size} bytes), the last for {what}')

    def tick(self) -> None:
        """Count an opcode; every :data:`_TICK` of them, check the deadline."""
        self.ops += 1
        if not self.ops % _TICK and time.monotonic() > self.deadline:
            raise _Refused(f'decoding it takes more than {self.seconds:.0f} s (the budget of '
                           f'a file of {self.size} bytes)')

    def weigh(self, node: _Node) -> None:
        if node.height > MAX_DEPTH:
            raise _Refused(f'it is nested more than {MAX_DEPTH} deep')
        if node.values > self.max_values:
            raise _Refused(f'it holds more than {self.max_values} values, counting every '
                           f'shared reference (the budget of a pickle of its size)')
        if node.data > self.max_data:
            raise _Refused(f'its tensors and arrays hold more than {self.max_data} bytes, '
                           f'counting every shared reference (the budget of a file of its size)')


def _describe(value: object) -> str:
    if isinstance(value, _Pending):
        return f'a {value.kind} used before its state was set'
    return f'the name {value!r}' if isinstance(value, _Global) else type(value).__name__


def _shown(value: object) -> str:
    return ' '.join(reprlib.repr(value).split())  # on one short line


def _resolve(value: object) -> object:
    return value.value if type(value) is _Pending and value.value is not None else value


def _args(args: object, name: str, least: int, most: int) -> list:
    """The arguments of a call of ``name``, padded with None to ``most``."""
    if type(args) is not tuple or not least <= len(args) <= most:
        raise _Refused(f'its pickle calls {name} with {_describe(args)} {_shown(args)}')
    return [*args, *[None] * (most - len(args))]


def _ints(value: object, what: str) -> tuple[int, ...]:
    if (not isinstance(value, (tuple, list)) or len(value) > 64
            or not all(type(v) is int and 0 <= v < 1 << 62 for v in value)):
        raise _Refused(f'a tensor {what} is {_shown(value)}, not a sequence of integers >= 0')
    return tuple(value)


def _overlaps(size: tuple[int, ...], stride: tuple[int, ...]) -> bool:
    """Whether a view may reach an element twice (each dimension, by stride, must step past
    what the smaller ones span)."""
    spanned = 0
    for s, n in sorted((s, n) for n, s in zip(size, stride) if n > 1):
        if s <= spanned:
            return True
        spanned += (n - 1) * s
    return False


# --------------------------------------------------------------------------- the machine
class _Machine:
    """Runs the pickles of one read on a stack of values, charging the read's budget."""

    def __init__(self, budget: _Budget, load_storage: Callable | None = None) -> None:
        self.budget, self.load_storage, self.pos = budget, load_storage, 0
        self.nodes: dict[int, _Node] = {}  # by id; each node keeps its container alive
        self.stack, self.marks = [], []  # the values, and those below each MARK
        self.memo, self.keyed = [], None  # entries numbered 0, 1, 2, ...; else a dict by str

    def run(self, ops: Iterator) -> object:
        """Run one pickle up to its STOP; return the checkpoint value it leaves."""
        for op, arg, self.pos in ops:
            self.budget.tick()
            name = op.name
            if name == 'STOP':
                break
            handler = _HANDLERS.get(name)
            if handler is None:
                raise _Refused(f'its pickle uses the opcode {name} (at byte {self.pos}), which '
                               f'torch.save does not write')
            try:
                handler(self, name, arg)
            except IndexError:
                raise _Corrupt(f'{name} at byte {self.pos} finds too few values on the '
                               f'stack') from None
        else:
            raise _Corrupt('the pickle ends before STOP')
        if self.marks or len(self.stack) != 1:
            raise _Corrupt(f'the pickle stops with {len(self.stack)} values on its stack')
        value = _resolve(self.stack[0])
        foreign = self.enclose(value)[3]
        if foreign is not None:
            raise _Refused(f'its pickle leaves {_describe(foreign)} in the checkpoint, which is '
                           f'not a checkpoint value')
        return value

    def push(self, value: object, nbytes: int = 0) -> None:
        """Push ``value``, charging its stack slot and the ``nbytes`` it took to build."""
        self.budget.spend(_COSTS['slot'] + nbytes, 'the stack')
        self.stack.append(value)

    def new(self, kind: type, items: list = ()) -> object:
        """A new container of ``items`` (a dict's keys and values in turn)."""
        whole = kind is tuple or kind is torch.Size  # made at once, of its items
        each = _ITEM_COSTS[kind][1] * len(items) if whole else 0
        self.budget.spend(_EMPTY_SIZES[kind] + _COSTS['node'] + each, f'a {kind.__name__}')
        node = _Node(None if whole else kind())
        if whole:
            self.add(node, items)
            node.value = kind(items)
        elif kind is frozenset:  # built as a set, then frozen
            built = self.nodes[id(self.new(set, items))]
            self.spend_items(node, len(built.value))
            node.value, node.values = frozenset(built.value), built.values
        elif items:
            self.fill(node, items)
        self.nodes[id(node.value)] = node
        return node.value

    def spend_items(self, node: _Node, count: int) -> None:
        kind = type(node.value)
        first, each = _ITEM_COSTS[kind]
        self.budget.spend(each * count + (first if count and not node.value else 0),
                          f'{kind.__name__} items')

    def enclose(self, item: object) -> tuple[int, int, int, object]:
        """Seal ``item``; return its values, data bytes, height and first non-checkpoint value."""
        kind = type(item)
        if kind in _CONTAINERS:
            node = self.nodes[id(item)]
            node.sealed = True
            return node.values, node.data, node.height, node.foreign
        if kind in _ATOMS or kind in _NUMPY_SCALARS:
            return 1, 0, 0, None
        if kind is torch.Tensor or kind is torch.nn.Parameter:
            return 1, item.numel() * item.element_size(), 0, None
        if kind is np.ndarray:
            return 1, item.nbytes, 0, None
        if (kind.__module__, kind.__name__) == _HISTORY_BUFFER:
            return 3, item._log_history.nbytes + item._count_history.nbytes, 0, None
        return 1, 0, 0, item

    def add(self, node: _Node, items: list, keys: int = 0) -> None:
        """Weigh ``items`` (sealing them) and ``keys`` more atoms into an unsealed container."""
        for item in items:
            values, data, height, foreign = self.enclose(item)
            node.foreign = foreign if node.foreign is None else node.foreign
            node.values += values
            node.data += data
            node.height = max(node.height, height + 1)
        if node.sealed:
            kind = type(node.value).__name__
            if any(item is node.value for item in items):
                raise _Refused(f'a {kind} contains itself')
            raise _Refused(f'its pickle changes a {kind} after putting it into another value, '
                           f'which torch.save never does (a {kind} could contain itself)')
        node.values += keys
        self.budget.weigh(node)

    def fill(self, node: _Node, items: list) -> None:
        """Put ``items`` into a list, set or dict (a dict's keys and values in turn)."""
        container = node.value
        if type(container) is list:
            keys, values = (), items
        elif type(container) is set:
            keys, values = items, ()
        elif len(items) % 2:
            raise _Corrupt('SETITEMS has a key without a value')
        else:
            keys, values = items[0::2], items[1::2]
        self.spend_items(node, max(len(keys), len(values)))
        self.add(node, values, keys=len(keys))
        if type(container) is list:
            container.extend(values)
        else:
            for key, value in zip(keys, values or [None] * len(keys)):
                self.insert(node, key, value)

    def insert(self, node: _Node, key: object, value: object) -> None:
        """Put ``key`` into a dict or set, charging what hashing it may cost."""
        container, kind = node.value, type(key)
        if kind is str or kind is bytes:
            self.budget.step(len(key), 'str and bytes keys')
            if kind is str and not key.isprintable():  # keys reach logs and terminals
                raise _Refused(f'a dict key or set item {ascii(key[:80])} holds control '
                               f'characters')
        elif kind in _KEY_TYPES:
            if kind is int and not -1 << 63 <= key < 1 << 64:
                # at most 12 such ints share a hash, so a lookup compares few big values
                raise _Refused(f'a dict key or set item is an int of {key.bit_length()} bits '
                               f'(int keys hold at most 64)')
            self.budget.step(node.predictable, 'int, float, bool and None keys')
        else:
            raise _Refused(f'a dict key or set item is {_describe(key)}: keys may only be str, '
                           f'int, float, bool, None or bytes')
        size = len(container)
        if type(container) is set:
            container.add(key)
        else:
            container[key] = value
        if kind is not str and kind is not bytes and len(container) > size:
            node.predictable += 1
            if node.predictable > MAX_PREDICTABLE_KEYS:
                raise _Refused(f'a {type(container).__name__} has more than '
                               f'{MAX_PREDICTABLE_KEYS} int, float, bool or None keys (their '
                               f'hashes are predictable; only str and bytes keys may be more)')

    def op_scalar(self, name: str, arg: object) -> None:
        """A number, str or bytes (a Python 2 str read as utf-8, as torch.load reads it)."""
        if name in ('STRING', 'BINSTRING', 'SHORT_BINSTRING'):
            self.budget.spend(sys.getsizeof(b'') + len(arg), 'Python 2 strings')
            arg = arg.encode('latin-1').decode('utf-8')
        elif type(arg) is str and not arg.isascii():
            try:  # pickletools reads BINUNICODE with 'surrogatepass', as pickle does
                arg.encode('utf-8')
            except UnicodeEncodeError:
                raise _Refused('a string is not valid UTF-8 (a lone surrogate)') from None
        elif type(arg) is int and arg.bit_length() > MAX_INT_BITS:
            raise _Refused(f'an integer has {arg.bit_length()} bits (at most {MAX_INT_BITS})')
        cached = type(arg) is int and -5 <= arg <= 256  # CPython's small ints
        self.push(arg, 0 if cached else sys.getsizeof(arg))

    def op_stack(self, name: str, _: object) -> None:
        if name == 'MARK':
            self.budget.spend(_COSTS['mark'], 'marks')
            self.marks.append(self.stack)
            self.stack = []
        elif name == 'POP_MARK':
            self.stack = self.marks.pop()
        elif name == 'POP':
            self.stack.pop()
        elif name == 'DUP':
            self.push(self.stack[-1])
        elif name in _CONSTANTS:
            self.push(_CONSTANTS[name])

    def op_container(self, name: str, _: object) -> None:
        """A new container of the values the opcode takes, or they go into the one below."""
        count, kind = _CONTAINER_OPS[name]
        if count is None:  # the values since the mark
            items, self.stack = self.stack, self.marks.pop()
            self.budget.step(len(items), f'the items of {name}')
        elif len(self.stack) < count:
            raise IndexError(name)
        else:
            items = self.stack[-count:]
            del self.stack[-count:]
        items = [_resolve(item) for item in items]
        if type(kind) is not tuple:
            self.push(self.new(kind, items))
        elif type(self.stack[-1]) in kind:
            self.fill(self.nodes[id(self.stack[-1])], items)
        else:
            raise _Refused(f'its pickle runs {name} on {_describe(self.stack[-1])}')

    def op_empty(self, name: str, _: object) -> None:
        self.push(self.new(_EMPTY[name]))

    def op_put(self, name: str, arg: object) -> None:
        """Entries numbered in order go into a list; any other index moves them to a dict."""
        value = self.stack[-1]
        if self.keyed is None:
            index = len(self.memo) if name == 'MEMOIZE' else arg
            if 0 <= index <= len(self.memo):
                self.budget.spend(_COSTS['memo'], 'memo entries')
                if index == len(self.memo):
                    self.memo.append(value)
                else:
                    self.memo[index] = value
                return
            self.budget.spend(_COSTS['keyed memo'] * len(self.memo), 'memo entries')
            self.keyed, self.memo = {str(i): entry for i, entry in enumerate(self.memo)}, []
        self.budget.spend(_COSTS['keyed memo'], 'memo entries')
        self.keyed[str(len(self.keyed) if name == 'MEMOIZE' else arg)] = value

    def op_get(self, name: str, arg: object) -> None:
        if self.keyed is None and 0 <= arg < len(self.memo):
            self.push(_resolve(self.memo[arg]))
        elif self.keyed is not None and str(arg) in self.keyed:
            self.push(_resolve(self.keyed[str(arg)]))
        else:
            raise _Corrupt(f'{name} at byte {self.pos} refers to memo entry {arg}, which was '
                           f'never stored')

    def op_global(self, name: str, arg: object) -> None:
        if name == 'GLOBAL':
            module, _, attr = arg.partition(' ')
        else:
            attr, module = self.stack.pop(), self.stack.pop()
            if type(module) is not str or type(attr) is not str:
                raise _Refused(f'STACK_GLOBAL names {_describe(module)}.{_describe(attr)}')
        key = _Global((_MODULE_ALIASES.get(module, module), attr))
        if key not in ALLOWED_GLOBALS:
            raise _Refused(f'its pickle needs {key!r:.120}, which is not on the list of plain '
                           f'weights and MMEngine training state (loading it could run code)')
        known = ALLOWED_GLOBALS[key]
        self.push(known if isinstance(known, torch.dtype) else key, _COSTS['object'])

    def op_reduce(self, name: str, _: object) -> None:
        """REDUCE calls a name of :data:`ALLOWED_GLOBALS`; NEWOBJ only makes HistoryBuffers."""
        args, func = self.stack.pop(), self.stack.pop()
        func_name = func if isinstance(func, _Global) else None
        if name == 'NEWOBJ' and func_name == _HISTORY_BUFFER and type(args) is tuple and not args:
            self.push(_Pending('HistoryBuffer', _Machine.history_buffer), _COSTS['object'])
        elif name == 'REDUCE' and callable(ALLOWED_GLOBALS.get(func_name)):
            self.push(ALLOWED_GLOBALS[func_name](self, args))
        else:
            raise _Refused(f'its pickle calls {_describe(func)} ({name}), which no checkpoint '
                           f'value is made by')

    def op_build(self, name: str, _: object) -> None:
        """Complete a pending value or set a state dict's ``_metadata`` (modules' int versions)."""
        state, target = _resolve(self.stack.pop()), self.stack[-1]
        if type(state) in _CONTAINERS:
            self.enclose(state)
        if type(target) is _Pending and target.value is None:
            self.stack[-1] = target.value = target.build(self, target.arg, state)
        elif type(target) is OrderedDict and not hasattr(target, '_metadata') \
                and type(state) is dict and len(state) == 1 and '_metadata' in state \
                and not self.nodes[id(target)].sealed:
            entries = state['_metadata']
            entries = entries.items() if type(entries) in (dict, OrderedDict) else ()
            self.budget.step(len(entries), 'state dict metadata')
            self.budget.spend(_EMPTY_SIZES[OrderedDict] + _COSTS['metadata'] * len(entries),
                              'state dict metadata')
            target._metadata = OrderedDict(
                (prefix, {'version': entry['version']} if type(entry.get('version')) is int
                 else {}) for prefix, entry in entries
                if type(prefix) is str and type(entry) is dict)
        else:
            raise _Refused(f'its pickle sets the state of {_describe(target)} to '
                           f'{_describe(state)}, which a checkpoint value never has')

    def op_persid(self, name: str, _: object) -> None:
        if self.load_storage is None:
            raise _Refused('its pickle refers to a storage where none may be')
        self.push(self.load_storage(self.stack.pop()))

    # What the names of ALLOWED_GLOBALS mean, called by REDUCE (or, for pending values, BUILD).
    def tensor(self, args: tuple, v3: bool = False) -> torch.Tensor:
        """``_rebuild_tensor_v2`` (``v3`` also names the dtype): a view within a storage."""
        storage, offset, size, stride, requires_grad, hooks, *rest = _args(
            args, f'_rebuild_tensor_v{2 + v3}', 6 + v3, 7 + v3)
        dtype, metadata = rest if v3 else (None, rest[0])
        if not isinstance(storage, _Storage):
            raise _Refused(f'a tensor was rebuilt from {_describe(storage)}, not a storage')
        size, stride = _ints(size, 'size'), _ints(stride, 'stride')
        if type(offset) is not int or not 0 <= offset < 1 << 62 or len(size) != len(stride):
            raise _Refused(f'a tensor has offset {_shown(offset)}, size {size} and stride {stride}')
        if type(hooks) not in (dict, OrderedDict) or hooks or metadata \
                or type(requires_grad) is not bool:
            raise _Refused('a tensor carries hooks or metadata (plain weights have neither)')
        if v3 and dtype is not storage.dtype:
            raise _Refused(f'a {_shown(dtype)} tensor views a {storage.dtype} storage')
        numel = math.prod(size)
        extent = offset + sum((n - 1) * s for n, s in zip(size, stride)) + 1 if numel else 0
        if numel > storage.numel or extent > storage.numel:
            raise _Refused(f'a tensor of shape {size} and stride {stride} claims {numel} elements '
                           f'of a storage that has {storage.numel}: a tensor may not hold more '
                           f'elements than its storage')
        if numel and _overlaps(size, stride):
            raise _Refused(f'a tensor of shape {size} and stride {stride} has dimensions that '
                           f'overlap or interleave (no view may reach an element twice)')
        self.budget.spend(_COSTS['tensor'], 'tensors')
        tensor = torch.empty(0, dtype=storage.dtype).set_(storage.untyped, offset, size, stride)
        return tensor.requires_grad_(requires_grad and (tensor.is_floating_point()
                                                        or tensor.is_complex()))

    def parameter(self, args: tuple) -> torch.nn.Parameter:
        data, requires_grad, hooks = _args(args, '_rebuild_parameter', 3, 3)
        if type(data) is not torch.Tensor or type(requires_grad) is not bool or hooks:
            raise _Refused('a Parameter was rebuilt from something other than a plain tensor')
        self.budget.spend(_COSTS['tensor'], 'tensors')
        return torch.nn.Parameter(data, requires_grad and (data.is_floating_point()
                                                          or data.is_complex()))

    def numpy_dtype(self, args: tuple) -> _Pending:
        name, align, copy = _args(args, 'numpy.dtype', 1, 3)
        if name not in NUMPY_DTYPES or not all(type(v or False) is bool for v in (align, copy)):
            raise _Refused(f'numpy dtype {_shown(name)} is not one of the plain numeric dtypes '
                           f'{NUMPY_DTYPES}')
        self.budget.spend(_COSTS['object'], 'numpy dtypes')
        return _Pending('numpy dtype', _Machine.numpy_dtype_state, name)

    def numpy_dtype_state(self, name: str, state: object) -> np.dtype:
        """A plain numeric dtype's state: ``(3, byteorder, None, None, None, -1, -1, 0)``."""
        if (type(state) is not tuple or len(state) != 8 or state[0] != 3
                or state[1] not in ('<', '>', '|', '=')
                or state[2:] != (None, None, None, -1, -1, 0)):
            raise _Refused(f'numpy dtype {name!r} has the state {_shown(state)}, which only '
                           f'structured or object dtypes have')
        self.budget.spend(_COSTS['object'], 'numpy dtypes')
        return np.dtype(name).newbyteorder(state[1]) if state[1] in '<>' else np.dtype(name)

    def numpy_array(self, args: tuple) -> _Pending:
        subtype, _, _ = _args(args, 'numpy _reconstruct', 3, 3)
        if not isinstance(subtype, _Global) or subtype != ('numpy', 'ndarray'):
            raise _Refused(f'numpy _reconstruct was asked for {_describe(subtype)}, not ndarray')
        self.budget.spend(_COSTS['object'], 'numpy arrays')
        return _Pending('numpy array', _Machine.numpy_array_state)

    def numpy_array_state(self, _: object, state: object) -> np.ndarray:
        if type(state) is not tuple or len(state) != 5:
            raise _Refused(f'a numpy array has the state {_describe(state)}')
        _, shape, dtype, is_fortran, raw = state
        shape = _ints(shape, 'shape')
        if not isinstance(dtype, np.dtype) or type(is_fortran) is not bool \
                or type(raw) is not bytes:
            raise _Refused(f'a numpy array is not a plain numeric array ({_describe(dtype)}, '
                           f'{_describe(raw)})')
        if len(raw) != math.prod(shape) * dtype.itemsize:
            raise _Refused(f'a numpy array of shape {shape} and dtype {dtype} holds {len(raw)} '
                           f'bytes')
        self.budget.spend(_COSTS['array'] + len(raw), 'numpy arrays')
        return np.frombuffer(raw, dtype).reshape(shape, order='F' if is_fortran else 'C').copy()

    def numpy_scalar(self, args: tuple) -> np.generic:
        dtype, raw = _args(args, 'numpy scalar', 2, 2)
        if not isinstance(dtype, np.dtype) or type(raw) is not bytes or len(raw) != dtype.itemsize:
            raise _Refused('a numpy scalar is not a plain numeric scalar')
        self.budget.spend(_COSTS['object'], 'numpy scalars')
        return np.frombuffer(raw, dtype)[0]

    def history_buffer(self, _: object, state: object) -> object:
        """MMEngine's HistoryBuffer of two 1-D arrays of equal length (default statistics)."""
        from mmengine.logging import HistoryBuffer
        if type(state) is not dict or len(state) != 4 or set(state) != {
                'max_length', '_log_history', '_count_history', 'statistics_methods'}:
            raise _Refused('a HistoryBuffer has a state that MMEngine does not write')
        log, count, max_length, statistics = (state[k] for k in (
            '_log_history', '_count_history', 'max_length', 'statistics_methods'))
        self.budget.step(len(statistics) if type(statistics) is dict else 0, 'HistoryBuffers')
        if (type(log) is not np.ndarray or type(count) is not np.ndarray or log.ndim != 1
                or log.shape != count.shape or type(max_length) is not int or max_length < 1
                or type(statistics) is not dict
                or not all(type(v) is str and v in _STATISTICS for v in statistics.values())):
            raise _Refused('a HistoryBuffer does not hold two 1-D arrays of equal length')
        self.budget.spend(_COSTS['history'] + log.nbytes + count.nbytes, 'HistoryBuffers')
        return HistoryBuffer(log[-max_length:], count[-max_length:], max_length)

    def statistic(self, args: tuple) -> str:
        """``getattr(HistoryBuffer, 'min')`` and co: how a HistoryBuffer pickles statistics."""
        owner, name = _args(args, 'getattr', 2, 2)
        of_buffer = isinstance(owner, _Global) and owner == _HISTORY_BUFFER
        if of_buffer and name in _STATISTICS:
            return name
        owner = 'HistoryBuffer' if of_buffer else _describe(owner)
        raise _Refused(f'its pickle needs getattr({owner}, {_shown(name)}), which is not on the '
                       f'list of plain weights and MMEngine training state')

    def counter(self, args: tuple) -> Counter:
        counts, = _args(args, 'Counter', 0, 1)
        counts = {} if counts is None else counts
        if type(counts) is not dict:
            raise _Refused('a Counter does not count with integers')
        self.budget.step(len(counts), 'Counters')
        if not all(type(v) is int for v in counts.values()):
            raise _Refused('a Counter does not count with integers')
        return self.new(Counter, [part for pair in counts.items() for part in pair])

    def codecs_encode(self, args: tuple) -> bytes:
        """``_codecs.encode(text, 'latin1')``: how protocol 2 pickles bytes."""
        text, encoding = _args(args, '_codecs.encode', 2, 2)
        if type(text) is not str or encoding != 'latin1':
            raise _Refused('_codecs.encode may only turn latin1 text into bytes')
        self.budget.step(len(text), '_codecs.encode')
        self.budget.spend(sys.getsizeof(b'') + len(text), '_codecs.encode results')
        return text.encode('latin1')


def _collection(kind: type) -> Callable[[_Machine, tuple], object]:
    """``set(items)`` or ``frozenset(items)`` of a list or tuple (how protocol 2 pickles them)."""
    def build(m: _Machine, args: tuple) -> object:
        items, = _args(args, kind.__name__, 0, 1)
        items = () if items is None else items
        if type(items) not in (list, tuple):
            raise _Refused(f'{kind.__name__} was built from {_describe(items)}')
        return m.new(kind, list(items))
    return build


def _only(name: str, arity: int, make: Callable, *types: type
          ) -> Callable[[_Machine, tuple], object]:
    """A call of ``make`` with at most ``arity`` arguments of ``types`` (or None)."""
    def build(m: _Machine, args: tuple) -> object:
        values = _args(args, name, 0 if not types else 1, arity)
        if not all(v is None or type(v) in types for v in values) or not types and values:
            raise _Refused(f'{name} was called with {_shown(args)}')
        m.budget.step(sum(len(v) for v in values if type(v) is str), name)
        m.budget.spend(_COSTS['object'], name)
        return make(*(v for v in values if v is not None))
    return build


_CONSTANTS = {'NONE': None, 'NEWTRUE': True, 'NEWFALSE': False}
#: How many values each container opcode takes (None: those since the mark), and the kind it
#: makes, or (a tuple) the kinds of the container below them that it fills; and the empty ones.
_CONTAINER_OPS = {
    'TUPLE1': (1, tuple), 'TUPLE2': (2, tuple), 'TUPLE3': (3, tuple), 'TUPLE': (None, tuple),
    'LIST': (None, list), 'DICT': (None, dict), 'FROZENSET': (None, frozenset),
    'APPEND': (1, (list, )), 'APPENDS': (None, (list, )), 'SETITEM': (2, (dict, OrderedDict)),
    'SETITEMS': (None, (dict, OrderedDict)), 'ADDITEMS': (None, (set, ))}
_EMPTY = {'EMPTY_TUPLE': tuple, 'EMPTY_LIST': list, 'EMPTY_DICT': dict, 'EMPTY_SET': set}
#: What each opcode ``torch.save`` writes means (STOP ends :meth:`_Machine.run`).
_HANDLERS: dict[str, Callable[[_Machine, str, object], None]] = {
    name: handler for handler, names in (
        (_Machine.op_scalar, 'INT BININT BININT1 BININT2 LONG LONG1 LONG4 FLOAT BINFLOAT UNICODE '
                             'SHORT_BINUNICODE BINUNICODE BINUNICODE8 SHORT_BINBYTES BINBYTES '
                             'BINBYTES8 STRING BINSTRING SHORT_BINSTRING'),
        (_Machine.op_stack, 'MARK POP_MARK POP DUP NONE NEWTRUE NEWFALSE PROTO FRAME'),
        (_Machine.op_container, ' '.join(_CONTAINER_OPS)), (_Machine.op_empty, ' '.join(_EMPTY)),
        (_Machine.op_put, 'PUT BINPUT LONG_BINPUT MEMOIZE'),
        (_Machine.op_get, 'GET BINGET LONG_BINGET'),
        (_Machine.op_global, 'GLOBAL STACK_GLOBAL'), (_Machine.op_reduce, 'REDUCE NEWOBJ'),
        (_Machine.op_build, 'BUILD'), (_Machine.op_persid, 'BINPERSID'),
    ) for name in names.split()}
#: Every name a checkpoint may use, and what calling it (REDUCE) means; ``None``: a name that is
#: only ever an argument (a storage type, ``numpy.ndarray``, ``HistoryBuffer``).
ALLOWED_GLOBALS: dict[tuple[str, str], Callable[[_Machine, tuple], object] | torch.dtype | None] = {
    ('collections', 'OrderedDict'):
        lambda m, args: m.new(OrderedDict, _args(args, 'OrderedDict', 0, 0)),
    ('collections', 'Counter'): _Machine.counter,
    ('builtins', 'set'): _collection(set), ('builtins', 'frozenset'): _collection(frozenset),
    ('builtins', 'complex'): _only('complex', 2, complex, int, float),
    ('builtins', 'bytes'): _only('bytes', 0, bytes), ('_codecs', 'encode'): _Machine.codecs_encode,
    ('builtins', 'getattr'): _Machine.statistic,
    ('torch._utils', '_rebuild_tensor_v2'): _Machine.tensor,
    ('torch._utils', '_rebuild_tensor_v3'): lambda m, args: m.tensor(args, v3=True),
    ('torch._utils', '_rebuild_parameter'): _Machine.parameter,
    ('torch', 'Size'): lambda m, args: m.new(torch.Size, list(_ints(
        _args(args, 'torch.Size', 1, 1)[0], 'size'))),
    ('torch', 'device'): _only('torch.device', 2, torch.device, str, int),
    **{('torch', name): None for name in STORAGE_DTYPES},
    **{('torch', str(dtype)[6:]): dtype for dtype in STORAGE_DTYPES.values()},
    ('numpy._core.multiarray', '_reconstruct'): _Machine.numpy_array,
    ('numpy._core.multiarray', 'scalar'): _Machine.numpy_scalar,
    ('numpy', 'dtype'): _Machine.numpy_dtype, ('numpy', 'ndarray'): None, _HISTORY_BUFFER: None,
}


# --------------------------------------------------------------------------- formats
class _Storages(dict):
    """The storages of one read by key, made when first used (legacy: filled after the pickles)."""

    def __init__(self, budget: _Budget, archive: zipfile.ZipFile | None = None,
                 prefix: str = '') -> None:
        super().__init__()
        self.budget, self.archive, self.prefix, self.declared = budget, archive, prefix, 0

    def __call__(self, pid: object) -> _Storage:
        """BINPERSID: the storage a persistent id names."""
        legacy = self.archive is None
        if type(pid) is not tuple or len(pid) != 5 + legacy or pid[0] != 'storage':
            raise _Refused(f'its pickle refers to the persistent object {_shown(pid)}')
        kind, key, location, numel = pid[1:5]
        if legacy and pid[5] is not None:
            raise _Refused('a storage is a view of another (the format of torch < 1.0)')
        if type(key) is str:
            self.budget.step(len(key), 'storage keys')
        if (not isinstance(kind, _Global) or kind[1] not in STORAGE_DTYPES
                or type(location) is not str or type(numel) is not int
                or not 0 <= numel < 1 << 62 or type(key) is not str or not key.isalnum()):
            raise _Refused(f'a storage reference {_shown(pid)} is not one torch.save writes')
        dtype = STORAGE_DTYPES[kind[1]]
        if key not in self:
            self[key] = self.make(key, dtype, numel)
        if self[key].dtype is not dtype or self[key].numel != numel:
            raise _Refused(f'storage {key} is read as two different storages')
        return self[key]

    def make(self, key: str, dtype: torch.dtype, numel: int) -> _Storage:
        """A storage the file holds (its record, or its share of the file), charged."""
        nbytes, name = numel * dtype.itemsize, f'{self.prefix}data/{key}'
        self.declared += nbytes
        if self.archive is None and self.declared > self.budget.size:
            raise _Refused(f'its storages declare {self.declared} bytes, more than the '
                           f'{self.budget.size} bytes of the file')
        record = None if self.archive is None else self.archive.NameToInfo.get(name)
        if self.archive is not None and (record is None or record.file_size != nbytes):
            raise _Refused(f'record {name} is missing or does not hold the {nbytes} bytes of its '
                           f'{dtype} storage of {numel} elements')
        self.budget.spend(_COSTS['storage'] + nbytes, 'storages')
        buffer = bytearray(nbytes)
        if record is not None:
            with self.archive.open(record) as member:
                _read_into(member, buffer)  # zipfile checks the CRC at the end
        return _Storage(buffer, dtype, numel)


def _read_into(stream: BinaryIO, buffer: bytearray) -> None:
    view = memoryview(buffer)
    for start in range(0, len(buffer), _CHUNK):
        done = start + stream.readinto(view[start:start + _CHUNK])
        if done < min(start + _CHUNK, len(buffer)):
            raise _Corrupt(f'a storage ends after {done} of {len(buffer)} bytes')


def _check_records(stream: BinaryIO, records: list[zipfile.ZipInfo], end: int) -> None:
    """Records as torch.save writes them: unique, stored, sized alike twice, one after the
    other before the directory at ``end`` (so each byte of the file is read for one record)."""
    if len({record.filename for record in records}) != len(records):
        raise _Refused('its zip archive holds two records of the same name')
    free = 0  # where the next record may begin
    for record in sorted(records, key=lambda r: r.header_offset):
        if record.header_offset < free:
            raise _Refused(f'record {record.filename} overlaps the record before it')
        if record.compress_type != zipfile.ZIP_STORED:
            method = zipfile.compressor_names.get(record.compress_type,
                                                  f'method {record.compress_type}')
            raise _Refused(f'record {record.filename} is compressed with {method}, but '
                           f'torch.save stores every record uncompressed')
        if record.flag_bits & 1:
            raise _Refused(f'record {record.filename} is encrypted')
        stream.seek(record.header_offset)
        local = struct.unpack('<4s2B4HL2L2H', stream.read(30))
        extra = stream.read(local[10] + local[11])[local[10]:]
        told = [local[7:10]]  # (CRC, compressed size, size) as the local header may give them
        if local[3] & 8:  # in a descriptor after the data (as torch.save writes them)
            stream.seek(record.compress_size, 1)
            tail = stream.read(24)
            tail = tail[4:] if tail.startswith(b'PK\x07\x08') else tail
            told = [struct.unpack(layout, tail[:struct.calcsize(layout)])
                    for layout in ('<3L', '<LQQ') if len(tail) >= struct.calcsize(layout)]
        at = 0
        while len(extra) - at >= 20 and 0xFFFFFFFF in local[8:10]:  # zip64: in an extra
            tag, length = struct.unpack_from('<2H', extra, at)
            if tag == 1:
                told = [(local[7], *struct.unpack_from('<2Q', extra, at + 4)[::-1])]
            at += 4 + length
        if (local[0] != b'PK\x03\x04' or local[4] != record.compress_type
                or (record.CRC, record.compress_size, record.file_size) not in told
                or record.compress_size != record.file_size):
            raise _Refused(f'record {record.filename} has a CRC, sizes or a method in its local '
                           f'header that differ from the central directory')
        free = record.header_offset + 30 + local[10] + local[11] + record.compress_size
        if free > end:
            raise _Refused(f'record {record.filename} runs into the zip directory')


def _read_zip(stream: BinaryIO, budget: _Budget) -> object:
    """The zip format: ``<name>/data.pkl`` and its storage records ``<name>/data/<key>``."""
    try:  # zipfile reads the central directory whole: charged first, at the size it claims
        end = zipfile._EndRecData(stream)  # noqa: SLF001
        if end:
            directory = min(end[zipfile._ECD_SIZE], budget.size)  # noqa: SLF001
            budget.spend(_ZIP_DIRECTORY_PER_BYTE * directory, 'the zip directory')
        archive = zipfile.ZipFile(stream)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as err:
        raise _Corrupt(f'the zip archive is truncated or corrupt: {err}') from None
    _check_records(stream, archive.infolist(), archive.start_dir)
    pickles = [record for name, record in archive.NameToInfo.items()
               if name.count('/') == 1 and name.endswith('/data.pkl')]
    if len(pickles) != 1:
        raise _Corrupt('it is a zip archive but not one written by torch.save (no single '
                       '<name>/data.pkl)')
    prefix = pickles[0].filename[:-len('data.pkl')]
    byteorder = archive.NameToInfo.get(prefix + 'byteorder')
    if byteorder is not None and (
            byteorder.file_size != len(b'little') or archive.read(byteorder) != b'little'):
        raise _Refused('it was written on a big-endian machine, which is not supported')
    budget.spend(pickles[0].file_size, 'the pickle')
    budget.max_values = VALUES_PER_BYTE * pickles[0].file_size + VALUES_BASE
    ops = pickletools.genops(io.BytesIO(archive.read(pickles[0])))
    return _Machine(budget, _Storages(budget, archive, prefix)).run(ops)


def _read_legacy(stream: BinaryIO, budget: _Budget) -> object:
    """Five pickles (magic, protocol, system sizes, value, storage keys), then the storages."""
    storages = _Storages(budget)
    bounded = SimpleNamespace(  # the file as genops reads it: none past its end, short lines
        tell=stream.tell, readline=lambda: stream.readline(_LINE_LIMIT),
        read=lambda count: stream.read(max(0, min(count, budget.size - stream.tell()))))

    def decode(load_storage: _Storages | None = None) -> object:
        return _Machine(budget, load_storage).run(pickletools.genops(bounded))

    if decode() != _LEGACY_MAGIC or decode() != _LEGACY_PROTOCOL:
        raise _Corrupt('it is a pickle, but not one written by torch.save')
    sys_info = decode()
    if type(sys_info) is not dict or sys_info.get('little_endian') is not True:
        raise _Refused('it was written on a big-endian machine, which is not supported')
    result, keys = decode(storages), decode()
    mismatch = _Corrupt('its storage list does not match the storages its pickle uses')
    if type(keys) is not list or len(keys) != len(storages) \
            or not all(type(key) is str for key in keys):
        raise mismatch
    budget.step(sum(len(key) for key in keys), 'storage keys')
    if set(keys) != storages.keys():
        raise mismatch
    for key in keys:
        count = stream.read(8)
        if len(count) != 8 or struct.unpack('<q', count)[0] != storages[key].numel:
            raise _Corrupt(f'storage {key} has the wrong size')
        _read_into(stream, storages[key].buffer)
    return result


def decode_torch_file(stream: BinaryIO, size: int, source: str) -> object:
    """Decode a ``torch.save`` file (zip archive or legacy pickle) into closed values.

    Args:
        stream: The file, opened in binary mode at its start; seekable.
        size: Its size in bytes (the budget of the read is proportional to it).
        source: Names the file in errors (quoted by the caller).

    Returns:
        What was saved, of the closed set of types, with CPU tensors.

    Raises:
        CheckpointError: the file needs a name off :data:`ALLOWED_GLOBALS`, builds what those
            may not, exceeds its budget, or is truncated, corrupt or not a torch file.
    """
    try:
        head = stream.read(4)
        stream.seek(0)
        if head.startswith(b'PK\x03\x04'):
            return _read_zip(stream, _Budget(size))
        if len(head) > 1 and head[0] == 0x80 and 2 <= head[1] <= 5:
            return _read_legacy(stream, _Budget(size))
    except _Refused as err:
        raise CheckpointError(f'Refused to load checkpoint {source}: {err}') from None
    except _Corrupt as err:
        raise CheckpointError(f'Could not read checkpoint {source}: the file is truncated or '
                              f'corrupt ({err})') from None
    except Exception as err:  # noqa: BLE001 -- whatever damaged bytes make the parsers raise
        detail = (str(err).strip().splitlines() or [''])[0]
        raise CheckpointError(f'Could not read checkpoint {source}: the file is truncated or '
                              f'corrupt ({type(err).__name__}: {detail[:200]})') from None
    raise CheckpointError(f'Could not read checkpoint {source}: it is neither a torch.save file '
                          f'nor a safetensors file')
