"""Crafted checkpoint files, one per class of attack on loading (and a few plain bad files).

Each maker writes a file into a folder and returns its path. ``MARKER`` names the file a
code-running payload would create; tests check it never appears. The classes:

* code: pickles that call a function off the allow-list (``os.system``, ``eval`` via
  ``builtins``, ``torch.load`` itself, a ``getattr`` to reach one);
* torch-registered globals: objects torch adds to its own weights-only list at import
  (``traceback.FrameSummary``, builtin exceptions, ``DeviceMesh``);
* numpy: dtypes with fields or object type, object arrays, ndarray subclasses;
* size: stride-0 and overlapping tensors, compressed records (deflate, bzip2, lzma), zip
  headers that lie, legacy files that declare more than they hold, memo references re-used
  until the value would hold billions of items, nesting 10^5 deep;
* state: MMEngine training state of the wrong shape (a malformed ``HistoryBuffer``), a
  BUILD that would resize a tensor after its bounds were checked, a BUILD on a name of the
  decoder's own list (which must not change how later files read);
* opcodes ``torch.save`` never writes (``INST``, ``OBJ``, extensions, out-of-band buffers);
* budgets: files of a chosen size that would cost the reader far more than that size
  (a memoised string encoded or copied into arrays again and again, floods of one-byte
  opcodes, int and float keys that all hash alike, equal long keys compared in full, deep
  nesting, shared references that double at each level, storages no record holds).

Hand-written pickles are assembled with :func:`program` and packed like ``torch.save``
packs them with :func:`torch_zip`; the makers of the budget section take their sizes and
return the bytes of a file.
"""
from __future__ import annotations

import builtins
import io
import itertools
import os
import pickle
import re
import struct
import sys
import traceback
import warnings
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from mmengine.logging import HistoryBuffer

MARKER = 'PWNED'


class Reduce:
    """Pickles as ``func(*args)`` (and ``BUILD state`` when given)."""

    def __init__(self, func, args=(), state=None):
        self.func, self.args, self.state = func, args, state

    def __reduce__(self):
        return (self.func, self.args) if self.state is None else (self.func, self.args,
                                                                  self.state)


def program(*parts: bytes) -> bytes:
    """A pickle of protocol 2 from raw opcode bytes (``b'.'``, STOP, ends it)."""
    return b'\x80\x02' + b''.join(parts)


def persistent_storage(key: str, numel: int, kind: str = 'FloatStorage') -> bytes:
    """``BINPERSID ('storage', torch.<kind>, key, 'cpu', numel)``, as torch.save writes it."""
    return (b'(X\x07\x00\x00\x00storagectorch\n' + kind.encode() + b'\nX'
            + struct.pack('<L', len(key)) + key.encode() + b'X\x03\x00\x00\x00cpu'
            + b'J' + struct.pack('<l', numel) + b'tQ')


def tensor_ops(numel: int, key: str = '0') -> list[bytes]:
    """The opcodes of a 1-D float tensor of ``numel`` elements on record ``key``."""
    return [b'ctorch._utils\n_rebuild_tensor_v2\n(', persistent_storage(key, numel),
            b'K\x00J' + struct.pack('<l', numel) + b'\x85K\x01\x85\x89',
            b'ccollections\nOrderedDict\n)RtR']


def torch_zip(pickle_bytes: bytes, records: dict[str, bytes], method: int = zipfile.ZIP_STORED,
              extra: dict[str, bytes] | None = None) -> bytes:
    """Pack a pickle and storage records the way ``torch.save`` does (``archive/...``);
    ``extra`` records are written again after them (the same names make duplicates)."""
    out = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(out, 'w', compression=method) as archive:
        warnings.simplefilter('ignore')  # duplicate names are what some tests want
        archive.writestr('archive/data.pkl', pickle_bytes)
        archive.writestr('archive/byteorder', b'little')
        for key, data in records.items():
            archive.writestr(f'archive/data/{key}', data)
        for key, data in (extra or {}).items():
            archive.writestr(f'archive/data/{key}', data)
    return out.getvalue()


def _save(path: Path, obj: object, legacy: bool = False) -> Path:
    torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
    return path


def _weights() -> dict:
    return {'state_dict': OrderedDict(w=torch.ones(4))}


# --------------------------------------------------------------------------- code
def os_system(folder: Path) -> Path:
    marker = folder / MARKER
    return _save(folder / 'os_system.pth', {**_weights(), 'x': Reduce(os.system, (
        f'touch {marker}',))})


def builtins_exec(folder: Path) -> Path:
    marker = folder / MARKER
    return _save(folder / 'builtins_exec.pth', {**_weights(), 'x': Reduce(builtins.exec, (
        f'open({str(marker)!r}, "w").close()',))})


def getattr_escape(folder: Path) -> Path:
    """``getattr(HistoryBuffer, '__init__')``: the one allowed getattr, asked for more."""
    return _save(folder / 'getattr_escape.pth', {
        **_weights(), 'x': Reduce(getattr, (HistoryBuffer, '__init__'))})


def nested_torch_load(folder: Path) -> Path:
    return _save(folder / 'nested_torch_load.pth', {**_weights(), 'x': Reduce(
        torch.load, (str(os_system(folder)),))})


def legacy_format_code(folder: Path) -> Path:
    """The old single-pickle format of torch < 1.6, with a payload."""
    marker = folder / MARKER
    return _save(folder / 'legacy_code.pth', {**_weights(), 'x': Reduce(os.system, (
        f'touch {marker}',))}, legacy=True)


# --------------------------------------------------------------------------- torch's own list
def frame_summary(folder: Path, target: str | None = None) -> Path:
    """``FrameSummary(path, 1, name)`` reads a line of ``path`` while unpickling."""
    target = target or str(folder / 'fifo')
    if target == str(folder / 'fifo') and not os.path.exists(target):
        os.mkfifo(target)
    return _save(folder / 'frame_summary.pth', {**_weights(), 'x': Reduce(
        traceback.FrameSummary, (target, 1, 'f'))})


def builtin_exception(folder: Path) -> Path:
    return _save(folder / 'exception.pth', {**_weights(), 'x': Reduce(RuntimeError, ('x',))})


def device_mesh(folder: Path) -> Path:
    try:
        from torch.distributed.device_mesh import DeviceMesh
    except ImportError:  # torch 2.1 keeps it in a private module
        from torch.distributed._tensor.device_mesh import DeviceMesh
    return _save(folder / 'device_mesh.pth', {**_weights(), 'x': Reduce(DeviceMesh, (
        'cpu', [0]))})


# --------------------------------------------------------------------------- numpy
def numpy_dtype_fields(folder: Path) -> Path:
    """A float64-class dtype whose state gives it (object) fields."""
    state = (3, '|', None, ('f', ), {'f': (np.dtype('f8'), 0)}, 8, 1, 16)
    return _save(folder / 'numpy_dtype_fields.pth', {**_weights(), 'x': Reduce(
        np.dtype, ('f8', False, True), state)})


def numpy_object_array(folder: Path) -> Path:
    return _save(folder / 'numpy_object.pth', {**_weights(),
                                               'x': np.array([1, 'a'], dtype=object)})


def numpy_subclass(folder: Path) -> Path:
    return _save(folder / 'numpy_masked.pth', {**_weights(),
                                               'x': np.ma.masked_array([1., 2.])})


# --------------------------------------------------------------------------- size
def stride_zero(folder: Path) -> Path:
    """Optimizer state with a tensor that views 1 element as 10^9 (4 GB when copied)."""
    bomb = torch.zeros(1).expand(10 ** 9)
    return _save(folder / 'stride_zero.pth', {**_weights(), 'optimizer': {
        'state': {0: {'exp_avg': bomb}}, 'param_groups': [{'params': [0]}]}})


def overlapping_view(folder: Path) -> Path:
    storage = torch.zeros(20000)
    bomb = storage.as_strided((10000, 10000), (1, 1))
    return _save(folder / 'overlapping.pth', {**_weights(), 'x': bomb})


def repeated_element(folder: Path) -> Path:
    """A 2 x 2 tensor whose rows both view the first two of its storage's four elements."""
    return _save(folder / 'repeated_element.pth', {**_weights(),
                                                   'x': torch.zeros(4).as_strided((2, 2), (0, 1))})


def recompressed(data: bytes, method: int) -> bytes:
    """A torch zip archive with every record written again with compression ``method``."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, 'w') as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info), compress_type=method)
    return out.getvalue()


def _bomb(folder: Path, method: int, name: str) -> Path:
    """A 4 MB tensor record compressed to a few kB."""
    plain = io.BytesIO()
    torch.save({'w': torch.zeros(10 ** 6)}, plain)
    path = folder / name
    path.write_bytes(recompressed(plain.getvalue(), method))
    return path


def zip_bomb(folder: Path) -> Path:
    return _bomb(folder, zipfile.ZIP_DEFLATED, 'zip_bomb.pth')


def bzip2_bomb(folder: Path) -> Path:
    return _bomb(folder, zipfile.ZIP_BZIP2, 'bzip2_bomb.pth')


def lzma_bomb(folder: Path) -> Path:
    return _bomb(folder, zipfile.ZIP_LZMA, 'lzma_bomb.pth')


def duplicate_record(folder: Path) -> Path:
    """Two records named ``archive/data/0``: which one is read depends on the reader."""
    path = folder / 'duplicate.pth'
    path.write_bytes(torch_zip(program(*tensor_ops(4), b'.'), {'0': bytes(16)},
                               extra={'0': bytes(16)}))
    return path


def local_header_lie(folder: Path) -> Path:
    """A stored record whose local header gives other sizes than the central directory."""
    data = bytearray(torch_zip(program(*tensor_ops(4), b'.'), {'0': bytes(16)}))
    offset = data.index(b'archive/data/0') - 30  # its local header
    data[offset + 18:offset + 26] = struct.pack('<2L', 10 ** 9, 10 ** 9)
    path = folder / 'local_header.pth'
    path.write_bytes(bytes(data))
    return path


def shared_local_header(folder: Path) -> Path:
    """Two directory records that point at one local header: a reader that checks each
    record's header would read those bytes once per record."""
    data = bytearray(torch_zip(program(*tensor_ops(4), b'.'), {'0': bytes(16), '1': bytes(16)}))
    entries = [m.start() for m in re.finditer(rb'PK\x01\x02', data)]
    data[entries[-1] + 42:entries[-1] + 46] = data[entries[-2] + 42:entries[-2] + 46]
    path = folder / 'shared_local_header.pth'
    path.write_bytes(bytes(data))
    return path


def lone_surrogate(folder: Path) -> Path:
    """A str key holding a lone surrogate, which no UTF-8 text (a log line, a file name)
    can carry."""
    path = folder / 'lone_surrogate.pth'
    path.write_bytes(torch_zip(program(b'}X\x03\x00\x00\x00\xed\xa0\x80K\x01s.'), {}))
    return path


def terminal_escape_key(folder: Path) -> Path:
    """Every weight, and a key that clears the screen when a log names it."""
    return _save(folder / 'terminal_escape_key.pth', {**_weights(), '\x1b[2J': torch.zeros(1)})


def memo_bomb(folder: Path) -> Path:
    """A list of 1000 items referenced 10^6 times: 2 MB that a walk would see as 10^9."""
    ops = [b']q\x00(', b'N' * 1000, b'e0](', b'h\x00' * 10 ** 6, b'e.']
    path = folder / 'memo_bomb.pth'
    path.write_bytes(torch_zip(program(*ops), {}))
    return path


def deep_nesting(folder: Path) -> Path:
    """Lists nested 10^5 deep: whatever recurses into the result would overflow."""
    path = folder / 'deep.pth'
    path.write_bytes(torch_zip(program(b']' * 10 ** 5, b'a' * (10 ** 5 - 1), b'.'), {}))
    return path


def self_containing(folder: Path) -> Path:
    path = folder / 'cycle.pth'
    path.write_bytes(torch_zip(program(b']q\x00h\x00a.'), {}))
    return path


def tuple_key(folder: Path) -> Path:
    path = folder / 'tuple_key.pth'
    path.write_bytes(torch_zip(program(b'}(K\x01K\x02\x86K\x03u.'), {}))
    return path


def legacy_declared_size(folder: Path) -> Path:
    """The legacy format declaring a 40 GB storage in a file of a few hundred bytes."""
    sentinel = object()

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if obj is sentinel:
                return ('storage', torch.FloatStorage, '0', 'cpu', 10 ** 10, None)
            return None

    buffer = io.BytesIO()
    for header in (0x1950a86a20f9469cfc6c, 1001,
                   dict(protocol_version=1001, little_endian=True,
                        type_sizes=dict(short=2, int=4, long=4))):
        pickle.dump(header, buffer, protocol=2)
    Pickler(buffer, protocol=2).dump({'w': Reduce(torch._utils._rebuild_tensor_v2, (
        sentinel, 0, (10 ** 10, ), (1, ), False, OrderedDict()))})
    pickle.dump(['0'], buffer, protocol=2)
    buffer.write(struct.pack('<q', 10 ** 10))
    path = folder / 'legacy_size.pth'
    path.write_bytes(buffer.getvalue())
    return path


# --------------------------------------------------------------------------- state
def tensor_resize(folder: Path) -> Path:
    """A checked 1-element tensor, then a BUILD (``Tensor.__setstate__``, which calls
    ``set_``) giving it 2^28 elements of the same 4-byte record."""
    path = folder / 'tensor_resize.pth'
    state = program(b'(', persistent_storage('0', 1), b'K\x00J\x00\x00\x00\x10\x85K\x01\x85t')
    path.write_bytes(torch_zip(program(*tensor_ops(1), state, b'b.'), {'0': bytes(4)}))
    return path


def build_on_allowed_name(name: tuple[str, str], called: bool) -> bytes:
    """A pickle that sets attributes on a name of the decoder's list (or on what calling it
    with no arguments makes): if that worked, later files would read differently."""
    module, attr = name
    state = b'}(X\x05\x00\x00\x00dtypeK\x01X\x08\x00\x00\x00__call__K\x02u'
    return torch_zip(program(f'c{module}\n{attr}\n'.encode(), b')R' if called else b'',
                             state, b'b.'), {})


def malformed_history_buffer(folder: Path) -> Path:
    buffer = HistoryBuffer()
    buffer.update(1.0)
    buffer.__dict__['_log_history'] = 'not an array'
    return _save(folder / 'history_buffer.pth', {**_weights(), 'message_hub': {
        'log_scalars': {'loss': buffer}, 'runtime_info': {}, 'resumed_keys': {}}})


# --------------------------------------------------------------------------- budgets
# Files of a chosen size that cost the reader far more than their size, unless its budgets
# are counted as values are built: amplification (little bytes, much memory) and work that
# grows with the square of the file. Each returns the bytes of a torch zip archive.
#: Every multiple of it hashes to 0 as an int (CPython's modulus for numeric hashes).
HASH_MODULUS = 2 ** 61 - 1


def _text(text: str) -> bytes:
    data = text.encode('utf-8')
    return b'X' + struct.pack('<I', len(data)) + data


def long1(value: int) -> bytes:
    """LONG1 of ``value`` (an int of any size, as protocol 2 pickles one)."""
    data = value.to_bytes(value.bit_length() // 8 + 1, 'little', signed=True)
    return b'\x8a' + bytes([len(data)]) + data


def _put(index: int) -> bytes:
    return b'q' + bytes([index]) if index < 256 else b'r' + struct.pack('<I', index)


def _get(index: int) -> bytes:
    return b'h' + bytes([index]) if index < 256 else b'j' + struct.pack('<I', index)


def codecs_copies(length: int, copies: int) -> bytes:
    """A memoised string of ``length`` characters encoded ``copies`` times into a list (how
    protocol 2 pickles ``bytes``): 8 bytes of pickle per ``length`` bytes of value."""
    return torch_zip(program(b'c_codecs\nencode\n', _put(0), b'0', _text('a' * length), _put(1),
                             b'0', _text('latin1'), _put(2), b'0(',
                             (_get(0) + _get(1) + _get(2) + b'\x86R') * copies, b'l.'), {})


_NUMPY_F8 = (b'cnumpy\ndtype\n' + _text('f8') + b'\x89\x88\x87R(K\x03' + _text('<')
             + b'NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb')


def numpy_copies(nbytes: int, copies: int) -> bytes:
    """One memoised bytes object of ``nbytes`` as the data of ``copies`` float64 arrays in a
    list (each array copies it): 8 bytes of pickle per array."""
    return torch_zip(program(
        b'cnumpy._core.multiarray\n_reconstruct\n', _put(0), b'0',
        b'cnumpy\nndarray\nK\x00\x85C\x01b\x87', _put(1), b'0',
        b'(K\x01J' + struct.pack('<i', nbytes // 8) + b'\x85', _NUMPY_F8,
        b'\x89B' + struct.pack('<I', nbytes // 8 * 8) + bytes(nbytes // 8 * 8), b't', _put(2),
        b'0(', (_get(0) + _get(1) + b'R' + _get(2) + b'b') * copies, b'l.'), {})


#: One-byte opcodes that each build a value (or a memo entry) for free.
FLOODS = {'EMPTY_SET': b'\x8f', 'EMPTY_DICT': b'}', 'EMPTY_LIST': b']', 'MEMOIZE': b'\x94',
          'DUP': b'2', 'EMPTY_TUPLE': b')'}


def flood(opcode: str, count: int) -> bytes:
    """``count`` copies of a one-byte opcode (:data:`FLOODS`) after a None, in a list."""
    return torch_zip(program(b'(N', FLOODS[opcode] * count, b'l.'), {})


def colliding_int_keys(count: int) -> bytes:
    """A dict of ``count`` int keys ``k * (2**61 - 1)``: every one hashes to 0, so each
    insertion compares with all the keys before it."""
    return torch_zip(program(b'}(', b''.join(long1(k * HASH_MODULUS) + b'N'
                                             for k in range(1, count + 1)), b'u.'), {})


def many_int_keys(count: int) -> bytes:
    """A dict of the int keys ``0 .. count - 1``."""
    return torch_zip(program(b'}(', b''.join(long1(k) + b'N' for k in range(count)), b'u.'), {})


def colliding_lookups(bits: int, lookups: int) -> bytes:
    """Int keys of ``bits`` bits that hash alike (as many as there are, at most 1023), an
    integral float of that size and hash, then ``lookups`` insertions of the float again:
    each compares it with every int, on CPython's slow path for ints beyond 48 bits."""
    number = float(((1 << 52) + 12345) << (bits - 53))
    alike = (hash(number) + j * HASH_MODULUS
             for j in itertools.count((1 << (bits - 1)) // HASH_MODULUS))
    ints = [v for v in itertools.islice(itertools.takewhile(
        lambda v: v.bit_length() <= bits, alike), 1025) if v.bit_length() == bits
        and v != int(number)][:1023]
    return torch_zip(program(b'}(', b''.join(long1(v) + b'N' for v in ints),
                             b'G', struct.pack('>d', number), _put(0), b'Nu(',
                             (_get(0) + b'N') * lookups, b'u.'), {})


def colliding_key_dicts(keys: int, dicts: int) -> bytes:
    """``keys`` memoised colliding int keys, then ``dicts`` dicts that each hold all of them:
    about ``keys**2 / 2`` comparisons per dict of ``6 x keys`` bytes."""
    memo = b''.join(long1(k * HASH_MODULUS) + _put(k) + b'0' for k in range(1, keys + 1))
    one = b'}(' + b''.join(_get(k) + b'N' for k in range(1, keys + 1)) + b'u'
    return torch_zip(program(memo, b'(', one * dicts, b'l.'), {})


def colliding_float_keys(count: int) -> bytes:
    """A dict of ``count`` float and int keys that all hash to 3: ``3 * 2.0**(61 j)`` for
    every ``j`` a float can hold (2**61 is 1 modulo 2**61 - 1), then ``3 + k (2**61 - 1)``."""
    floats = [3.0 * 2.0 ** (61 * j) for j in range(-17, 17) if 0 < 3.0 * 2.0 ** (61 * j)]
    ints = [3 + k * HASH_MODULUS for k in range(max(0, count - len(floats)))]
    keys = [b'G' + struct.pack('>d', f) for f in floats[:count]] + [long1(i) for i in ints]
    return torch_zip(program(b'}(', b''.join(key + b'N' for key in keys), b'u.'), {})


def equal_str_keys(length: int, inserts: int, kind: str = 'dict') -> bytes:
    """Two distinct but equal strings of ``length`` characters; a dict (or set) holds the
    first and the second is inserted ``inserts`` times, each compared in full: 4 bytes of
    pickle per ``length`` bytes compared."""
    text = _text('a' * length)
    head = text + _put(0) + b'0' + text + _put(1) + b'0'
    if kind == 'set':
        return torch_zip(program(head, b'\x8f(', _get(0), _get(1) * inserts, b'\x90.'), {})
    return torch_zip(program(head, b'}', _get(0), b'Ns', (_get(1) + b'Ns') * inserts, b'.'),
                     {})


def deep_lists(depth: int) -> bytes:
    """``depth`` empty lists, each appended to the one before (two bytes of pickle a level)."""
    return torch_zip(program(b']' * depth, b'a' * (depth - 1), b'.'), {})


def deep_tuples(depth: int) -> bytes:
    """A None in ``depth`` nested 1-tuples (one byte of pickle per level)."""
    return torch_zip(program(b'N', b'\x85' * depth, b'.'), {})


def shared_dag(levels: int) -> bytes:
    """A list of two references to a list of two references to ... ``levels`` deep: 2**levels
    values to whatever walks the result, from 6 bytes of pickle per level."""
    ops = [b'(Nl', _put(0)]
    for level in range(1, levels + 1):
        ops += [b'0(', _get(level - 1), _get(level - 1), b'l', _put(level)]
    return torch_zip(program(*ops, b'.'), {})


def zip_extra_fields(records: int) -> bytes:
    """``records`` empty records whose extra fields (64 kB each) are 16383 empty fields:
    zipfile parses each by slicing off one field at a time."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, 'w') as archive:
        archive.writestr('archive/data.pkl', program(b'N.'))
        for index in range(records):
            info = zipfile.ZipInfo(f'archive/extra/{index}')
            info.extra = b'\x00\x99\x00\x00' * 16383
            archive.writestr(info, b'')
    return out.getvalue()


def absent_storages(count: int, numel: int = 10 ** 9) -> bytes:
    """``count`` tensors whose storage declares ``numel`` floats that no record holds."""
    return torch_zip(program(b'(', *tensor_ops(numel) * count, b'l.'), {})


#: Every maker whose file must be refused by the reader, with the words its error must have.
REFUSED = {
    os_system: 'posix.system',
    builtins_exec: 'builtins.exec',
    getattr_escape: r"getattr\(HistoryBuffer, '__init__'\)",
    nested_torch_load: 'torch.serialization.load',
    legacy_format_code: 'posix.system',
    frame_summary: 'traceback.FrameSummary',
    builtin_exception: 'builtins.RuntimeError',
    device_mesh: 'DeviceMesh',
    numpy_dtype_fields: 'only structured or object dtypes have',
    numpy_object_array: "numpy dtype 'O8'",
    numpy_subclass: 'numpy.ma.core',
    stride_zero: 'may not hold more elements than its storage',
    overlapping_view: 'may not hold more elements than its storage',
    repeated_element: 'overlap or interleave',
    zip_bomb: 'compressed with deflate',
    bzip2_bomb: 'compressed with bzip2',
    lzma_bomb: 'compressed with lzma',
    duplicate_record: 'two records of the same name',
    local_header_lie: 'local header that differ from the central directory',
    shared_local_header: 'overlaps the record before it',
    lone_surrogate: 'not valid UTF-8',
    terminal_escape_key: r"'\\x1b\[2J' holds control characters",
    memo_bomb: 'counting every shared reference',
    deep_nesting: 'nested more than 100 deep',
    self_containing: 'list contains itself',
    tuple_key: 'keys may only be str, int',
    tensor_resize: 'sets the state of Tensor',
    legacy_declared_size: 'more than the',
    malformed_history_buffer: 'HistoryBuffer does not hold two 1-D arrays',
}

#: Opcodes ``torch.save`` never writes, each in a pickle that would otherwise load.
REFUSED_OPCODES = {
    'INST': b'(ibuiltins\nlist\n.', 'OBJ': b'(cbuiltins\nset\no.',
    'EXT1': b'\x82\x01.', 'EXT2': b'\x83\x01\x00.', 'EXT4': b'\x84\x01\x00\x00\x00.',
    'NEWOBJ_EX': b'cbuiltins\nset\n)}\x92.', 'NEXT_BUFFER': b'\x97.',
    'READONLY_BUFFER': b'C\x01a\x98.', 'BYTEARRAY8': b'\x96' + bytes(8) + b'.',
    'PERSID': b'P0\n.',
}

if sys.platform != 'linux':  # os.mkfifo, and posix.system as the name of os.system
    REFUSED.pop(frame_summary)
