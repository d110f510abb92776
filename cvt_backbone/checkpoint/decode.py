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
  ``str``, ``int``, ``float``, ``bool``, ``None`` or ``bytes``, and at most
  :data:`MAX_PREDICTABLE_KEYS` of one container's are neither ``str`` nor ``bytes``; no
  container contains itself, none is nested more than :data:`MAX_DEPTH` deep;
* dense CPU ``torch.Tensor`` / ``torch.nn.Parameter`` of the dtypes of
  :data:`STORAGE_DTYPES`, viewing no element outside a storage as large as its record,
  and never more elements than that storage (no stride-0 or overlapping expansion);
  ``torch.dtype``, ``torch.device``;
* numpy arrays and scalars of the plain dtypes :data:`NUMPY_DTYPES`;
* MMEngine's ``HistoryBuffer``, rebuilt from two checked 1-D arrays.

A state dict's ``_metadata`` keeps only the integer ``version`` of each module: load flags
(``assign`` and the like) are never taken from a file. Both formats of ``torch.save`` are
read: the zip archive (torch >= 1.6), whose records must be stored uncompressed (as
``torch.save`` writes them), unique, sized alike in their local and central headers and
unpack to no more than the file; and the older single-pickle format. Big-endian files are
refused. Every failure is a :class:`CheckpointError`.

Every read has one budget (:class:`_Budget`), charged before or as each value is built,
never by a walk afterwards. For a file of ``n`` bytes:

* memory: ``MEMORY_PER_BYTE * n + MEMORY_BASE`` bytes for everything the read builds: the
  zip directory and the pickle, each record read, each value (strings, ``_codecs.encode``
  results, numpy array copies, tensors, containers and each item they gain), each memo
  entry and stack slot, at the sizes of :data:`_COSTS` and :data:`_ITEM_COSTS`;
* work: ``WORK_PER_BYTE * n + WORK_BASE`` steps beyond one per opcode: one per item a
  marked opcode moves or a call reads (a Counter's counts, a state dict's metadata), one
  per character of each string a call reads (``_codecs.encode``, storage keys) and of each
  ``str`` or ``bytes`` key inserted (equal keys are compared in full), and for each int,
  float, bool or ``None`` key as many steps as its container already has such keys (their
  hashes are predictable, so they may all collide);
* time: a deadline of ``SECONDS_BASE + SECONDS_PER_BYTE * n``, a backstop checked every
  :data:`_TICK` opcodes (which number at most the pickle's bytes);
* the decoded tree, counting every shared reference: at most ``VALUES_PER_BYTE`` values per
  pickle byte plus ``VALUES_BASE``, and ``DATA_PER_BYTE * n + DATA_BASE`` bytes of tensor and
  array data. A container's weight and height grow as items are added; it is sealed when
  put into another container or given to a BUILD, and a sealed container never changes, so
  a weight once added to a parent is final and no container can contain itself.

``str`` and ``bytes`` keys (and the memo's, when a pickle numbers its entries out of order)
hash with Python's random seed: the work bound assumes ``PYTHONHASHSEED`` is not fixed.
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
from collections.abc import Callable, Iterable, Iterator
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
#: Keys of one dict, set, frozenset or Counter that may be int, float, bool or None (an
#: optimizer state of a CvT-W24 detector has about 700 int keys).
MAX_PREDICTABLE_KEYS = 1024
#: The budgets of a read, each ``PER_BYTE x size + BASE`` (see the module docstring; the
#: measurements behind them are in docs/decoder_budgets.md).
MEMORY_PER_BYTE, MEMORY_BASE = 64, 64 << 20
WORK_PER_BYTE, WORK_BASE = 16, 1 << 24
SECONDS_PER_BYTE, SECONDS_BASE = 1e-5, 10.0
VALUES_PER_BYTE, VALUES_BASE = 4, 100_000
DATA_PER_BYTE, DATA_BASE = 4, 1 << 20

_TICK = 4096
#: Bytes of memory charged for each thing a read builds: upper bounds measured on CPython
#: 3.11 (tracemalloc for Python objects, RSS for tensors; docs/decoder_budgets.md). A
#: container costs its empty size and its ``node``; then, by kind, its first table (with
#: its first item) and each item (:data:`_ITEM_COSTS`). A memo entry costs ``memo`` while
#: the pickle numbers its entries in order, ``keyed memo`` after.
_COSTS = {'slot': 12, 'mark': 80, 'node': 224, 'memo': 12, 'keyed memo': 128, 'object': 128,
          'tensor': 1024, 'storage': 512, 'array': 256, 'history': 4096, 'metadata': 512}
_ITEM_COSTS = {list: (256, 16), tuple: (0, 16), torch.Size: (0, 16), dict: (256, 56),
               Counter: (512, 64), OrderedDict: (256, 104), set: (256, 128),
               frozenset: (256, 128)}
_EMPTY_SIZES = {kind: sys.getsizeof(kind()) for kind in _ITEM_COSTS}
#: zipfile holds about 10 bytes per byte of the central directory (a ZipInfo per record).
_ZIP_DIRECTORY_PER_BYTE = 16

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
_ITEMSIZE = {dtype: torch.empty(0, dtype=dtype).element_size()
             for dtype in STORAGE_DTYPES.values()}
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


class _Node:
    """A container this read built, as its budget sees it.

    ``values`` and ``data`` count the container and everything in it with every shared
    reference (values, and bytes of tensor and array data); ``height`` counts the containers
    on its longest path down; ``predictable`` its int, float, bool and None keys.
    ``foreign`` is the first value in it that may not be in a checkpoint (a name, a storage,
    a numpy dtype: arguments of REDUCE and BUILD hold them, the decoded value may not).
    Once ``sealed`` (put into another container or given to a BUILD) the container never
    changes.
    """

    __slots__ = ('value', 'values', 'data', 'height', 'predictable', 'foreign', 'sealed')

    def __init__(self, value: object) -> None:
        self.value, self.values, self.data, self.height = value, 1, 0, 1
        self.predictable, self.foreign, self.sealed = 0, None, False


class _Budget:
    """What one read of a file of ``size`` bytes may spend, charged before it is spent."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.memory = self.memory_left = MEMORY_PER_BYTE * size + MEMORY_BASE
        self.work = self.work_left = WORK_PER_BYTE * size + WORK_BASE
        self.seconds = SECONDS_BASE + SECONDS_PER_BYTE * size
        self.deadline = time.monotonic() + self.seconds
        self.ops = 0
        self.max_values = VALUES_PER_BYTE * size + VALUES_BASE
        self.max_data = DATA_PER_BYTE * size + DATA_BASE

    def spend(self, nbytes: int, what: str) -> None:
        """Charge ``nbytes`` of memory that ``what`` is about to take."""
        self.memory_left -= nbytes
        if self.memory_left < 0:
            raise _Refused(f'decoding it needs more than {self.memory} bytes of memory (the '
                           f'budget of a file of {self.size} bytes), the last for {what}')

    def step(self, steps: int, what: str) -> None:
        """Charge ``steps`` of work that ``what`` is about to do."""
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

    def set_pickle_size(self, size: int) -> None:
        """The tree's values are bounded by the pickle's size (the whole file if legacy)."""
        self.max_values = VALUES_PER_BYTE * size + VALUES_BASE

    def weigh(self, node: _Node) -> None:
        """Check a container that grew: its height, values and data with every reference."""
        if node.height > MAX_DEPTH:
            raise _Refused(f'it is nested more than {MAX_DEPTH} deep')
        if node.values > self.max_values:
            raise _Refused(f'it holds more than {self.max_values} values, counting every '
                           f'shared reference (the budget of a pickle of its size)')
        if node.data > self.max_data:
            raise _Refused(f'its tensors and arrays hold more than {self.max_data} bytes, '
                           f'counting every shared reference (the budget of a file of its '
                           f'size)')


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


def _leaf_weight(value: object) -> tuple[int, int] | None:
    """Values and data bytes of a checkpoint value that is not a container; None for a
    value that may not be in a checkpoint."""
    kind = type(value)
    if kind in _ATOMS or kind in _NUMPY_SCALARS:
        return 1, 0
    if kind is torch.Tensor or kind is torch.nn.Parameter:
        return 1, value.numel() * value.element_size()
    if kind is np.ndarray:
        return 1, value.nbytes
    if kind.__module__ == _HISTORY_BUFFER[0] and kind.__name__ == _HISTORY_BUFFER[1]:
        return 3, value._log_history.nbytes + value._count_history.nbytes
    return None


class _Memo:
    """The memo of one pickle. Pickles number its entries 0, 1, 2, ... (as pickle writes
    them), which a list holds; any other index moves the entries to a dict keyed by ``str``
    (hashed with a random seed, so no choice of indices makes keys collide)."""

    def __init__(self, budget: _Budget) -> None:
        self.budget = budget
        self.listed: list = []
        self.keyed: dict[str, object] | None = None

    def __len__(self) -> int:
        return len(self.listed) if self.keyed is None else len(self.keyed)

    def put(self, index: int, value: object) -> None:
        """Store ``value`` at ``index``, charging the entry first."""
        if self.keyed is None and 0 <= index <= len(self.listed):
            self.budget.spend(_COSTS['memo'], 'memo entries')
            if index == len(self.listed):
                self.listed.append(value)
            else:
                self.listed[index] = value
            return
        if self.keyed is None:
            self.budget.spend(_COSTS['keyed memo'] * len(self.listed), 'memo entries')
            self.keyed = {str(i): entry for i, entry in enumerate(self.listed)}
            self.listed = []
        self.budget.spend(_COSTS['keyed memo'], 'memo entries')
        self.keyed[str(index)] = value

    def get(self, index: int) -> object:
        """The entry at ``index``; KeyError if none was stored."""
        if self.keyed is not None:
            return self.keyed[str(index)]
        if not 0 <= index < len(self.listed):
            raise KeyError(index)
        return self.listed[index]


# --------------------------------------------------------------------------- the machine
class _Machine:
    """Runs the pickles of one read on a stack of values, charging the read's budget."""

    def __init__(self, budget: _Budget,
                 load_storage: Callable[[object], _Storage] | None = None) -> None:
        self.budget, self.load_storage = budget, load_storage
        self.nodes: dict[int, _Node] = {}  # by id; each node keeps its container alive
        self.stack: list = []
        self.marks: list[list] = []
        self.memo = _Memo(budget)
        self.pos = 0

    def run(self, ops: Iterator) -> object:
        """Run one pickle up to its STOP; return the checkpoint value it leaves."""
        for op, arg, self.pos in ops:
            self.budget.tick()
            name = op.name
            if name == 'STOP':
                return self.stop()
            handler = _HANDLERS.get(name)
            if handler is None:
                raise _Refused(f'its pickle uses the opcode {name} (at byte {self.pos}), '
                               f'which torch.save does not write')
            try:
                handler(self, name, arg)
            except IndexError:
                raise _Corrupt(f'{name} at byte {self.pos} finds too few values on the '
                               f'stack') from None
        raise _Corrupt('the pickle ends before STOP')

    def stop(self) -> object:
        """STOP: the one value left, which must be a checkpoint value all through."""
        if self.marks or len(self.stack) != 1:
            raise _Corrupt(f'the pickle stops with {len(self.stack)} values on its stack')
        value = _resolve(self.stack[0])
        foreign = self.enclose(value)[3]
        if foreign is not None:
            raise _Refused(f'its pickle leaves {_describe(foreign)} in the checkpoint, which '
                           f'is not a checkpoint value')
        return value

    def push(self, value: object, nbytes: int = 0) -> None:
        """Push ``value``, charging its stack slot and the ``nbytes`` it took to build."""
        self.budget.spend(_COSTS['slot'] + nbytes, 'the stack')
        self.stack.append(value)

    # ----------------------------------------------------------------------- containers
    def new(self, kind: type) -> _Node:
        """A new empty list, dict, OrderedDict, Counter or set, and its node."""
        self.budget.spend(_EMPTY_SIZES[kind] + _COSTS['node'], f'a {kind.__name__}')
        node = _Node(kind())
        self.nodes[id(node.value)] = node
        return node

    def spend_items(self, node: _Node, count: int) -> None:
        """Charge ``count`` items about to go into the container of ``node`` (and its first
        table if it is empty)."""
        kind = type(node.value)
        first, each = _ITEM_COSTS[kind]
        self.budget.spend(each * count + (first if count and not node.value else 0),
                          f'{kind.__name__} items')

    def new_tuple(self, items: list, kind: type = tuple) -> tuple:
        """A new tuple (or torch.Size) of ``items``."""
        self.budget.spend(_EMPTY_SIZES[kind] + _COSTS['node'] + _ITEM_COSTS[kind][1]
                          * len(items), f'a {kind.__name__}')
        node = _Node(None)
        self.add(node, items)
        value = node.value = kind(items)
        self.nodes[id(value)] = node
        return value

    def new_frozenset(self, items: Iterable) -> frozenset:
        """A new frozenset of ``items`` (built as a set, then frozen)."""
        node = self.new(set)
        self.add_keys(node, items)
        frozen = _Node(frozenset())
        self.budget.spend(_EMPTY_SIZES[frozenset] + _COSTS['node'], 'a frozenset')
        self.spend_items(frozen, len(node.value))
        frozen.value, frozen.values = frozenset(node.value), node.values
        self.nodes[id(frozen.value)] = frozen
        return frozen.value

    def enclose(self, item: object) -> tuple[int, int, int, object]:
        """Seal ``item`` as it goes into a container; return its values, data bytes, height
        and the first value in it that may not be in a checkpoint (None if there is none)."""
        if type(item) in _CONTAINERS:
            node = self.nodes[id(item)]
            node.sealed = True
            return node.values, node.data, node.height, node.foreign
        weight = _leaf_weight(item)
        return (1, 0, 0, item) if weight is None else (*weight, 0, None)

    def add(self, node: _Node, items: list, keys: int = 0) -> None:
        """Count ``items`` (sealed first) and ``keys`` more atoms into the weight of the
        container of ``node``, which must not be sealed itself."""
        for item in items:
            values, data, height, foreign = self.enclose(item)
            if node.foreign is None:
                node.foreign = foreign
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

    def extend(self, node: _Node, items: list) -> None:
        """LIST, APPEND, APPENDS: ``items`` go at the end of the list of ``node``."""
        self.spend_items(node, len(items))
        self.add(node, items)
        node.value.extend(items)

    def set_items(self, node: _Node, items: list) -> None:
        """DICT, SETITEM, SETITEMS: ``items`` are keys and values, in turn."""
        if len(items) % 2:
            raise _Corrupt('SETITEMS has a key without a value')
        self.spend_items(node, len(items) // 2)
        values = items[1::2]
        self.add(node, values, keys=len(values))
        for key, value in zip(items[0::2], values):
            self.insert(node, key, value)

    def add_keys(self, node: _Node, items: Iterable) -> None:
        """ADDITEMS and the items of a new set or frozenset."""
        items = list(items)
        self.spend_items(node, len(items))
        self.add(node, [], keys=len(items))
        for item in items:
            self.insert(node, item)

    def insert(self, node: _Node, key: object, value: object = None) -> None:
        """Put ``key`` into the dict or set of ``node``, charging what hashing it may cost:
        its length for str and bytes, else one step per predictable key already there."""
        container, kind = node.value, type(key)
        if kind is str or kind is bytes:
            self.budget.step(len(key), 'str and bytes keys')
        elif kind in _KEY_TYPES:
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

    def target(self, name: str, *kinds: type) -> _Node:
        """The node of the container on top of the stack, which ``name`` changes."""
        value = self.stack[-1]
        if type(value) not in kinds:
            raise _Refused(f'its pickle runs {name} on {_describe(value)}')
        return self.nodes[id(value)]

    # ----------------------------------------------------------------------- opcodes
    def op_scalar(self, name: str, arg: object) -> None:
        """A number, str or bytes the opcode carries (a Python 2 str read as utf-8, as
        torch.load reads it)."""
        if name in _PY2_STRINGS:
            self.budget.spend(sys.getsizeof(b'') + len(arg), 'Python 2 strings')
            arg = arg.encode('latin-1').decode('utf-8')
        elif type(arg) is int and arg.bit_length() > MAX_INT_BITS:
            raise _Refused(f'an integer has {arg.bit_length()} bits (at most {MAX_INT_BITS})')
        cached = type(arg) is int and -5 <= arg <= 256  # CPython's small ints
        self.push(arg, 0 if cached else sys.getsizeof(arg))

    def op_constant(self, name: str, _: object) -> None:
        """NONE, NEWTRUE, NEWFALSE."""
        self.push(_CONSTANTS[name])

    def op_framing(self, name: str, _: object) -> None:
        """PROTO and FRAME change nothing."""

    def op_mark(self, name: str, _: object) -> None:
        """MARK: a new stack for the values a marked opcode takes."""
        self.budget.spend(_COSTS['mark'], 'marks')
        self.marks.append(self.stack)
        self.stack = []

    def op_pop_mark(self, name: str, _: object) -> None:
        """POP_MARK: drop the values since the mark."""
        self.stack = self.marks.pop()

    def op_pop(self, name: str, _: object) -> None:
        """POP: drop the value on top."""
        self.stack.pop()

    def op_dup(self, name: str, _: object) -> None:
        """DUP: the value on top, once more."""
        self.push(self.stack[-1])

    def op_marked(self, name: str, _: object) -> None:
        """TUPLE, LIST, DICT, FROZENSET: a new container of the values since the mark;
        APPENDS, SETITEMS, ADDITEMS: they go into the container below the mark."""
        items = [_resolve(item) for item in self.stack]
        self.stack = self.marks.pop()
        self.budget.step(len(items), f'the items of {name}')
        if name == 'TUPLE':
            self.push(self.new_tuple(items))
        elif name == 'FROZENSET':
            self.push(self.new_frozenset(items))
        elif name == 'LIST':
            node = self.new(list)
            self.extend(node, items)
            self.push(node.value)
        elif name == 'DICT':
            node = self.new(dict)
            self.set_items(node, items)
            self.push(node.value)
        elif name == 'APPENDS':
            self.extend(self.target(name, list), items)
        elif name == 'SETITEMS':
            self.set_items(self.target(name, dict, OrderedDict), items)
        else:
            self.add_keys(self.target(name, set), items)

    def op_empty(self, name: str, _: object) -> None:
        """EMPTY_LIST, EMPTY_DICT, EMPTY_SET, EMPTY_TUPLE."""
        if name == 'EMPTY_TUPLE':
            self.push(self.new_tuple([]))
        else:
            self.push(self.new(_EMPTY[name]).value)

    def op_small_tuple(self, name: str, _: object) -> None:
        """TUPLE1, TUPLE2, TUPLE3: a tuple of the values on top of the stack."""
        count = int(name[-1])
        if len(self.stack) < count:
            raise IndexError(name)
        items = [_resolve(item) for item in self.stack[-count:]]
        del self.stack[-count:]
        self.push(self.new_tuple(items))

    def op_append(self, name: str, _: object) -> None:
        """APPEND: the value on top goes at the end of the list below it."""
        item = _resolve(self.stack.pop())
        self.extend(self.target(name, list), [item])

    def op_setitem(self, name: str, _: object) -> None:
        """SETITEM: the key and value on top go into the dict below them."""
        if len(self.stack) < 3:
            raise IndexError(name)
        items = [_resolve(item) for item in self.stack[-2:]]
        del self.stack[-2:]
        self.set_items(self.target(name, dict, OrderedDict), items)

    def op_put(self, name: str, arg: object) -> None:
        """PUT, BINPUT, LONG_BINPUT, MEMOIZE."""
        value = self.stack[-1]
        self.memo.put(len(self.memo) if name == 'MEMOIZE' else arg, value)

    def op_get(self, name: str, arg: object) -> None:
        """GET, BINGET, LONG_BINGET: a memo entry, once more."""
        try:
            value = self.memo.get(arg)
        except KeyError:
            raise _Corrupt(f'{name} at byte {self.pos} refers to memo entry {arg}, which was '
                           f'never stored') from None
        self.push(_resolve(value))

    def op_global(self, name: str, arg: object) -> None:
        """GLOBAL, STACK_GLOBAL: a name of :data:`ALLOWED_GLOBALS` (a torch dtype is itself)."""
        if name == 'GLOBAL':
            module, _, attr = arg.partition(' ')
        else:
            attr, module = self.stack.pop(), self.stack.pop()
            if type(module) is not str or type(attr) is not str:
                raise _Refused(f'STACK_GLOBAL names {_describe(module)}.{_describe(attr)}')
        key = (_MODULE_ALIASES.get(module, module), attr)
        if key not in ALLOWED_GLOBALS:
            raise _Refused(f'its pickle needs {".".join(key):.120}, which is not on the list '
                           f'of plain weights and MMEngine training state (loading it could '
                           f'run code)')
        known = ALLOWED_GLOBALS[key]
        self.push(known if isinstance(known, torch.dtype) else _Global(key), _COSTS['object'])

    def op_reduce(self, name: str, _: object) -> None:
        """REDUCE calls a name of :data:`ALLOWED_GLOBALS`; NEWOBJ only makes HistoryBuffers."""
        args = self.stack.pop()
        func = self.stack.pop()
        if name == 'NEWOBJ' and isinstance(func, _Global) and func.key == _HISTORY_BUFFER \
                and type(args) is tuple and not args:
            self.push(_Pending('HistoryBuffer'), _COSTS['object'])
        elif name == 'REDUCE' and isinstance(func, _Global) and \
                callable(ALLOWED_GLOBALS.get(func.key)):
            self.push(ALLOWED_GLOBALS[func.key](self, args))
        else:
            raise _Refused(f'its pickle calls {_describe(func)} ({name}), which no checkpoint '
                           f'value is made by')

    def op_build(self, name: str, _: object) -> None:
        """BUILD: complete a value this decoder left unfinished, or set a state dict's
        ``_metadata``; the state is sealed."""
        state = _resolve(self.stack.pop())
        target = self.stack[-1]
        if type(state) in _CONTAINERS:
            self.enclose(state)
        if isinstance(target, _Pending) and not target.done:
            target.value, target.done = _BUILDERS[target.kind](self, target.arg, state), True
            self.stack[-1] = target.value
        elif type(target) is OrderedDict and not hasattr(target, '_metadata') \
                and type(state) is dict and len(state) == 1 and '_metadata' in state \
                and not self.nodes[id(target)].sealed:
            target._metadata = self.metadata(state['_metadata'])
        else:
            raise _Refused(f'its pickle sets the state of {_describe(target)} to '
                           f'{_describe(state)}, which a checkpoint value never has')

    def metadata(self, metadata: object) -> OrderedDict:
        """A state dict's ``_metadata``: the int ``version`` of each module, nothing else."""
        entries = metadata.items() if type(metadata) in (dict, OrderedDict) else ()
        self.budget.step(len(entries), 'state dict metadata')
        self.budget.spend(_EMPTY_SIZES[OrderedDict] + _COSTS['metadata'] * len(entries),
                          'state dict metadata')
        return OrderedDict(
            (prefix, {'version': entry['version']} if type(entry.get('version')) is int
             else {}) for prefix, entry in entries if type(prefix) is str and type(entry) is dict)

    def op_persid(self, name: str, _: object) -> None:
        """BINPERSID: the storage record a persistent id names."""
        if self.load_storage is None:
            raise _Refused('its pickle refers to a storage where none may be')
        self.push(self.load_storage(self.stack.pop()))


# --------------------------------------------------------------------------- what names mean
def _tensor(m: _Machine, args: tuple, name: str = '_rebuild_tensor_v2') -> torch.Tensor:
    """A tensor viewing a storage of this read, within its elements."""
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
    m.budget.spend(_COSTS['tensor'], 'tensors')
    tensor = torch.empty(0, dtype=storage.dtype).set_(storage.untyped, offset, size, stride)
    return tensor.requires_grad_(requires_grad and (tensor.is_floating_point()
                                                    or tensor.is_complex()))


def _parameter(m: _Machine, args: tuple) -> torch.nn.Parameter:
    """A Parameter of a plain tensor, with neither hooks nor state."""
    data, requires_grad, hooks = _args(args, '_rebuild_parameter', 3, 3)
    if type(data) is not torch.Tensor or type(requires_grad) is not bool or hooks:
        raise _Refused('a Parameter was rebuilt from something other than a plain tensor')
    m.budget.spend(_COSTS['tensor'], 'tensors')
    return torch.nn.Parameter(data, requires_grad and (data.is_floating_point()
                                                      or data.is_complex()))


def _numpy_dtype(m: _Machine, args: tuple) -> _Pending:
    """``numpy.dtype(name)``, completed by its BUILD."""
    name, align, copy = _args(args, 'numpy.dtype', 1, 3)
    if name not in NUMPY_DTYPES or type(align or False) is not bool \
            or type(copy or False) is not bool:
        raise _Refused(f'numpy dtype {_shown(name)} is not one of the plain numeric dtypes '
                       f'{NUMPY_DTYPES}')
    m.budget.spend(_COSTS['object'], 'numpy dtypes')
    return _Pending('numpy dtype', name)


def _build_numpy_dtype(m: _Machine, name: str, state: object) -> np.dtype:
    """The state of a plain numeric dtype: its byte order and nothing else."""
    # A plain numeric dtype pickles (3, byteorder, None, None, None, -1, -1, 0): no
    # subarray, no field names, no fields, no fixed size, alignment or flags.
    if (type(state) is not tuple or len(state) != 8 or state[0] != 3
            or state[1] not in ('<', '>', '|', '=') or state[2:] != (None, None, None, -1, -1,
                                                                    0)):
        raise _Refused(f'numpy dtype {name!r} has the state {_shown(state)}, which only '
                       f'structured or object dtypes have')
    m.budget.spend(_COSTS['object'], 'numpy dtypes')
    dtype = np.dtype(name)
    return dtype.newbyteorder(state[1]) if state[1] in '<>' else dtype


def _reconstruct(m: _Machine, args: tuple) -> _Pending:
    """An empty ndarray (never a subclass), completed by its BUILD."""
    subtype, _, _ = _args(args, 'numpy _reconstruct', 3, 3)
    if not isinstance(subtype, _Global) or subtype.key != ('numpy', 'ndarray'):
        raise _Refused(f'numpy _reconstruct was asked for {_describe(subtype)}, not ndarray')
    m.budget.spend(_COSTS['object'], 'numpy arrays')
    return _Pending('numpy array')


def _build_numpy_array(m: _Machine, _: object, state: object) -> np.ndarray:
    """An array's shape, dtype and bytes: a copy of exactly those bytes."""
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
    m.budget.spend(_COSTS['array'] + len(raw), 'numpy arrays')  # the copy of its bytes
    return np.frombuffer(raw, dtype).reshape(shape, order='F' if is_fortran else 'C').copy()


def _numpy_scalar(m: _Machine, args: tuple) -> np.generic:
    """A numpy scalar of a plain dtype, from its bytes."""
    dtype, raw = _args(args, 'numpy scalar', 2, 2)
    if not isinstance(dtype, np.dtype) or type(raw) is not bytes or len(raw) != dtype.itemsize:
        raise _Refused('a numpy scalar is not a plain numeric scalar')
    m.budget.spend(_COSTS['object'], 'numpy scalars')
    return np.frombuffer(raw, dtype)[0]


def _build_history_buffer(m: _Machine, _: object, state: object) -> object:
    """MMEngine's HistoryBuffer from the state it writes: two 1-D arrays of equal length."""
    from mmengine.logging import HistoryBuffer

    if type(state) is not dict or len(state) != 4 or set(state) != {
            'max_length', '_log_history', '_count_history', 'statistics_methods'}:
        raise _Refused('a HistoryBuffer has a state that MMEngine does not write')
    log, count, max_length = (state[k] for k in ('_log_history', '_count_history',
                                                  'max_length'))
    statistics = state['statistics_methods']
    m.budget.step(len(statistics) if type(statistics) is dict else 0, 'HistoryBuffers')
    if (type(log) is not np.ndarray or type(count) is not np.ndarray or log.ndim != 1
            or log.shape != count.shape or type(max_length) is not int or max_length < 1
            or type(statistics) is not dict
            or not all(type(v) is str and v in _STATISTICS for v in statistics.values())):
        raise _Refused('a HistoryBuffer does not hold two 1-D arrays of equal length')
    m.budget.spend(_COSTS['history'] + log.nbytes + count.nbytes, 'HistoryBuffers')
    log, count = log[-max_length:], count[-max_length:]  # as it keeps them, but no warning
    return HistoryBuffer(log, count, max_length)  # the default statistics, not the file's


def _getattr(m: _Machine, args: tuple) -> str:
    """``getattr(HistoryBuffer, 'min')`` and co: how a HistoryBuffer pickles its statistics."""
    owner, name = _args(args, 'getattr', 2, 2)
    if isinstance(owner, _Global) and owner.key == _HISTORY_BUFFER and name in _STATISTICS:
        return name
    owner = 'HistoryBuffer' if isinstance(owner, _Global) and owner.key == _HISTORY_BUFFER \
        else _describe(owner)
    raise _Refused(f'its pickle needs getattr({owner}, {_shown(name)}), which is not on the '
                   f'list of plain weights and MMEngine training state')


def _collection(kind: type) -> Callable[[_Machine, tuple], object]:
    """``set(items)`` or ``frozenset(items)`` (how protocol 2 pickles them)."""
    def build(m: _Machine, args: tuple) -> object:
        items, = _args(args, kind.__name__, 0, 1)
        items = () if items is None else items
        if type(items) not in (list, tuple):
            raise _Refused(f'{kind.__name__} was built from {_describe(items)}')
        if kind is frozenset:
            return m.new_frozenset(items)
        node = m.new(set)
        m.add_keys(node, items)
        return node.value
    return build


def _counter(m: _Machine, args: tuple) -> Counter:
    """``Counter(counts)`` of a dict of int counts."""
    counts, = _args(args, 'Counter', 0, 1)
    counts = {} if counts is None else counts
    if type(counts) is not dict:
        raise _Refused('a Counter does not count with integers')
    m.budget.step(len(counts), 'Counters')
    if not all(type(v) is int for v in counts.values()):
        raise _Refused('a Counter does not count with integers')
    node = m.new(Counter)
    m.set_items(node, [part for pair in counts.items() for part in pair])
    return node.value


def _ordered_dict(m: _Machine, args: tuple) -> OrderedDict:
    """``OrderedDict()``: its items follow in SETITEMS, its ``_metadata`` in a BUILD."""
    _args(args, 'OrderedDict', 0, 0)
    return m.new(OrderedDict).value


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


def _encode(m: _Machine, args: tuple) -> bytes:
    """``_codecs.encode(text, 'latin1')``: how protocol 2 pickles bytes."""
    text, encoding = _args(args, '_codecs.encode', 2, 2)
    if type(text) is not str or encoding != 'latin1':
        raise _Refused('_codecs.encode may only turn latin1 text into bytes')
    m.budget.step(len(text), '_codecs.encode')
    m.budget.spend(sys.getsizeof(b'') + len(text), '_codecs.encode results')
    return text.encode('latin1')


def _size(m: _Machine, args: tuple) -> torch.Size:
    """``torch.Size(sizes)``."""
    return m.new_tuple(list(_ints(_args(args, 'torch.Size', 1, 1)[0], 'size')), torch.Size)


#: Every name a checkpoint may use, and what calling it (REDUCE) means; ``None``: a name
#: that is only ever an argument (a storage type, ``numpy.ndarray``, ``HistoryBuffer``).
ALLOWED_GLOBALS: dict[tuple[str, str],
                      Callable[[_Machine, tuple], object] | torch.dtype | None] = {
    ('collections', 'OrderedDict'): _ordered_dict,
    ('collections', 'Counter'): _counter,
    ('builtins', 'set'): _collection(set),
    ('builtins', 'frozenset'): _collection(frozenset),
    ('builtins', 'complex'): _only('complex', 2, complex, int, float),
    ('builtins', 'bytes'): _only('bytes', 0, bytes),
    ('_codecs', 'encode'): _encode,
    ('torch._utils', '_rebuild_tensor_v2'): _tensor,
    ('torch._utils', '_rebuild_tensor_v3'): lambda m, args: _tensor(m, args,
                                                                    '_rebuild_tensor_v3'),
    ('torch._utils', '_rebuild_parameter'): _parameter,
    ('torch', 'Size'): _size,
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

_SCALAR_OPS = {'INT', 'BININT', 'BININT1', 'BININT2', 'LONG', 'LONG1', 'LONG4', 'FLOAT',
               'BINFLOAT', 'UNICODE', 'SHORT_BINUNICODE', 'BINUNICODE', 'BINUNICODE8',
               'SHORT_BINBYTES', 'BINBYTES', 'BINBYTES8'}
_PY2_STRINGS = {'STRING', 'BINSTRING', 'SHORT_BINSTRING'}
_CONSTANTS = {'NONE': None, 'NEWTRUE': True, 'NEWFALSE': False}
_EMPTY = {'EMPTY_LIST': list, 'EMPTY_DICT': dict, 'EMPTY_SET': set}
#: What each opcode ``torch.save`` writes means (STOP ends :meth:`_Machine.run`).
_HANDLERS: dict[str, Callable[[_Machine, str, object], None]] = {
    **dict.fromkeys(_SCALAR_OPS | _PY2_STRINGS, _Machine.op_scalar),
    **dict.fromkeys(_CONSTANTS, _Machine.op_constant),
    **dict.fromkeys(('PROTO', 'FRAME'), _Machine.op_framing),
    'MARK': _Machine.op_mark, 'POP_MARK': _Machine.op_pop_mark, 'POP': _Machine.op_pop,
    'DUP': _Machine.op_dup,
    **dict.fromkeys(('TUPLE', 'LIST', 'DICT', 'FROZENSET', 'APPENDS', 'SETITEMS',
                     'ADDITEMS'), _Machine.op_marked),
    **dict.fromkeys(('EMPTY_TUPLE', *_EMPTY), _Machine.op_empty),
    **dict.fromkeys(('TUPLE1', 'TUPLE2', 'TUPLE3'), _Machine.op_small_tuple),
    'APPEND': _Machine.op_append, 'SETITEM': _Machine.op_setitem,
    **dict.fromkeys(('PUT', 'BINPUT', 'LONG_BINPUT', 'MEMOIZE'), _Machine.op_put),
    **dict.fromkeys(('GET', 'BINGET', 'LONG_BINGET'), _Machine.op_get),
    **dict.fromkeys(('GLOBAL', 'STACK_GLOBAL'), _Machine.op_global),
    **dict.fromkeys(('REDUCE', 'NEWOBJ'), _Machine.op_reduce),
    'BUILD': _Machine.op_build, 'BINPERSID': _Machine.op_persid,
}


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


def _read_into(stream: BinaryIO, buffer: bytearray) -> None:
    """Fill ``buffer`` from ``stream``, in chunks."""
    view, done = memoryview(buffer), 0
    while done < len(buffer):
        chunk = stream.read(min(_CHUNK, len(buffer) - done))
        if not chunk:
            raise _Corrupt(f'a storage ends after {done} of {len(buffer)} bytes')
        view[done:done + len(chunk)] = chunk
        done += len(chunk)


def _storage_pid(budget: _Budget, pid: object, legacy: bool) -> tuple[torch.dtype, str, int]:
    """Check a storage's persistent id; return its dtype, record key and element count."""
    fields = 6 if legacy else 5
    if type(pid) is not tuple or len(pid) != fields or pid[0] != 'storage':
        raise _Refused(f'its pickle refers to the persistent object {_shown(pid)}')
    storage_type, key, location, numel = pid[1:5]
    if legacy and pid[5] is not None:
        raise _Refused('a storage is a view of another (the format of torch < 1.0)')
    if (not isinstance(storage_type, _Global) or storage_type.key[1] not in STORAGE_DTYPES
            or type(location) is not str or type(numel) is not int or not 0 <= numel < 1 << 62
            or type(key) is not str):
        raise _Refused(f'a storage reference {_shown(pid)} is not one torch.save writes')
    budget.step(len(key), 'storage keys')
    if not key.isalnum():
        raise _Refused(f'a storage reference {_shown(pid)} is not one torch.save writes')
    return STORAGE_DTYPES[storage_type.key[1]], key, numel


def _open_zip(stream: BinaryIO, budget: _Budget) -> zipfile.ZipFile:
    """Open the archive, charging first for its central directory (zipfile reads it whole,
    a ZipInfo per record) at the size its end record gives."""
    try:
        end = zipfile._EndRecData(stream)  # noqa: SLF001 -- the directory size, read first
        if end:
            directory = min(end[zipfile._ECD_SIZE], budget.size)  # noqa: SLF001
            budget.spend(_ZIP_DIRECTORY_PER_BYTE * directory, 'the zip directory')
        return zipfile.ZipFile(stream)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as err:
        raise _Corrupt(f'the zip archive is truncated or corrupt: {err}') from None


def _local_sizes(stream: BinaryIO, record: zipfile.ZipInfo) -> tuple[tuple, list[tuple]]:
    """A record's local header, and the (CRC, compressed, full size) triples it may give."""
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
    at = 0
    while len(extra) - at >= 20 and 0xFFFFFFFF in local[8:10]:  # zip64: sizes in an extra
        tag, length = struct.unpack_from('<2H', extra, at)
        if tag == 1:
            told = [(local[7], *struct.unpack_from('<2Q', extra, at + 4)[::-1])]
        at += 4 + length
    return local, told


def _check_records(stream: BinaryIO, records: list[zipfile.ZipInfo], size: int) -> None:
    """Records as torch.save writes them: unique, stored, sized alike twice, in the file."""
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
        local, told = _local_sizes(stream, record)
        if (local[0] != b'PK\x03\x04' or local[4] != record.compress_type
                or (record.CRC, record.compress_size, record.file_size) not in told
                or record.compress_size != record.file_size):
            raise _Refused(f'record {record.filename} has a CRC, sizes or a method in its '
                           f'local header that differ from the central directory')
    unpacked = sum(record.file_size for record in records)
    if unpacked > size:
        raise _Refused(f'its records unpack to {unpacked} bytes, more than the {size} bytes '
                       f'of the file')


def _read_zip(stream: BinaryIO, budget: _Budget) -> object:
    """The zip format: ``<name>/data.pkl`` and its storage records ``<name>/data/<key>``."""
    archive = _open_zip(stream, budget)
    records = archive.infolist()
    _check_records(stream, records, budget.size)
    pickles = [r.filename for r in records if r.filename.count('/') == 1
               and r.filename.endswith('/data.pkl')]
    if len(pickles) != 1:
        raise _Corrupt('it is a zip archive but not one written by torch.save (no single '
                       '<name>/data.pkl)')
    prefix = pickles[0][:-len('data.pkl')]
    names = set(archive.namelist())
    if prefix + 'byteorder' in names and (
            archive.getinfo(prefix + 'byteorder').file_size != len(b'little')
            or archive.read(prefix + 'byteorder') != b'little'):
        raise _Refused('it was written on a big-endian machine, which is not supported')
    storages: dict[str, _Storage] = {}

    def load_storage(pid: object) -> _Storage:
        dtype, key, numel = _storage_pid(budget, pid, legacy=False)
        if key not in storages:
            name = f'{prefix}data/{key}'
            nbytes = numel * _ITEMSIZE[dtype]
            if name not in names or archive.getinfo(name).file_size != nbytes:
                raise _Refused(f'record {name} is missing or does not hold the {nbytes} bytes '
                               f'of its {dtype} storage of {numel} elements')
            budget.spend(_COSTS['storage'] + nbytes, 'storages')
            buffer = bytearray(nbytes)
            with archive.open(name) as member:
                _read_into(member, buffer)  # zipfile checks the CRC at the end
            storages[key] = _Storage(buffer, dtype, numel)
        if storages[key].dtype is not dtype or storages[key].numel != numel:
            raise _Refused(f'record {key} is read as two different storages')
        return storages[key]

    pickle_size = archive.getinfo(pickles[0]).file_size
    budget.spend(pickle_size, 'the pickle')
    budget.set_pickle_size(pickle_size)
    data = archive.read(pickles[0])
    return _Machine(budget, load_storage).run(pickletools.genops(io.BytesIO(data)))


def _read_legacy(stream: BinaryIO, budget: _Budget) -> object:
    """The legacy format: five pickles (a magic number, the protocol, the system's sizes,
    the value, its storage keys), then each storage's element count and bytes."""
    size = budget.size
    bounded = _Bounded(stream, size)

    def decode(load_storage: Callable[[object], _Storage] | None = None) -> object:
        return _Machine(budget, load_storage).run(pickletools.genops(bounded))

    if decode() != _LEGACY_MAGIC or decode() != _LEGACY_PROTOCOL:
        raise _Corrupt('it is a pickle, but not one written by torch.save')
    sys_info = decode()
    if type(sys_info) is not dict or sys_info.get('little_endian') is not True:
        raise _Refused('it was written on a big-endian machine, which is not supported')
    pending: dict[str, tuple[_Storage, bytearray]] = {}
    declared = [0]  # bytes of the storages pending so far

    def load_storage(pid: object) -> _Storage:
        dtype, key, numel = _storage_pid(budget, pid, legacy=True)
        if key not in pending:
            nbytes = numel * _ITEMSIZE[dtype]
            declared[0] += nbytes
            if declared[0] > size:
                raise _Refused(f'its storages declare {declared[0]} bytes, more than the '
                               f'{size} bytes of the file')
            budget.spend(_COSTS['storage'] + nbytes, 'storages')
            buffer = bytearray(nbytes)
            pending[key] = (_Storage(buffer, dtype, numel), buffer)
        if pending[key][0].dtype is not dtype or pending[key][0].numel != numel:
            raise _Refused(f'storage {key} is read as two different storages')
        return pending[key][0]

    result = decode(load_storage)
    keys = decode()
    if (type(keys) is not list or len(keys) != len(pending)
            or not all(type(key) is str for key in keys)):
        raise _Corrupt('its storage list does not match the storages its pickle uses')
    budget.step(sum(len(key) for key in keys), 'storage keys')
    if set(keys) != pending.keys():
        raise _Corrupt('its storage list does not match the storages its pickle uses')
    for key in keys:
        storage, buffer = pending[key]
        count = stream.read(8)
        if len(count) != 8 or struct.unpack('<q', count)[0] != storage.numel:
            raise _Corrupt(f'storage {key} has the wrong size')
        _read_into(stream, buffer)
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
            return _read_zip(stream, _Budget(size))
        if len(head) > 1 and head[0] == 0x80 and 2 <= head[1] <= 5:
            return _read_legacy(stream, _Budget(size))
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
