"""Hypothesis strategies of torch files (valid-ish pickles in damaged containers) and checks
that a decoded value is one of the closed set of :mod:`cvt_backbone.checkpoint.decode`.

Programs mix three kinds of parts: opcodes of real ``torch.save`` pickles (so the decoder's
deep paths are reached), every opcode of protocols 0-5 with a generated argument (lengths
that may lie), and the names the decoder knows. They are packed as zip archives (stored or
compressed records, duplicates, lying headers, cut) or legacy files. :func:`budget_attacks`
makes files of the budget families of :mod:`tests.checkpoint.crafted` at a drawn size.
"""
from __future__ import annotations

import collections
import io
import json
import math
import pickletools
import struct
import zipfile

import numpy as np
import torch
from hypothesis import strategies as st
from mmengine.logging import HistoryBuffer

from cvt_backbone.checkpoint import decode
from tests.checkpoint import crafted
from tests.checkpoint.crafted import persistent_storage, program, torch_zip


def training_state() -> dict:
    """A checkpoint holding one of everything the decoder knows (the trusted file)."""
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    buffer = HistoryBuffer()
    buffer.update(1.5)
    return {
        'state_dict': model.state_dict(), 'p': torch.nn.Parameter(torch.ones(2)),
        'half': torch.arange(4, dtype=torch.float16).view(2, 2).t(), 'b': torch.tensor(True),
        'meta': {'epoch': 2, 'dtype': torch.bfloat16, 'device': torch.device('cpu'),
                 'classes': ('a', 'b'), 'palette': [(1, 2, 3)], 'seed': 2 ** 40, 'x': 1.5e-3,
                 'c': 1 + 2j, 'bytes': b'\x00\xff', 'empty': b'', 'none': None},
        'milestones': collections.Counter([3, 3, 5]), 'ids': {1, 2}, 'frozen': frozenset('ab'),
        'size': torch.Size([2, 3]), 'log': buffer, 'eta': np.float64(2.5),
        'array': np.arange(6, dtype=np.int32).reshape(2, 3), 'mask': np.array([True]),
        'optimizer': {'state': {0: {'step': torch.tensor(3.)}},
                      'param_groups': [{'params': [0], 'betas': (0.9, 0.999)}]},
    }


def detector_training_state(params: int = 700) -> dict:
    """What MMEngine saves while training a detector with a CvT-W24 backbone, by structure:
    ``params`` parameters (each with an AdamW state under an int key), an EMA copy, the
    message hub's HistoryBuffers, COCO's dataset meta and a scheduler. Every tensor holds
    one element, so the pickle is nearly all of the file (the hardest case for a budget
    proportional to the file's size)."""
    keys = [f'backbone.stages.{i // 60}.blocks.{i % 60}.attn.conv_proj_q.conv.weight'
            for i in range(params)]
    weights = collections.OrderedDict((key, torch.zeros(1)) for key in keys)
    state = {i: {'step': torch.tensor(9e4), 'exp_avg': torch.zeros(1),
                 'exp_avg_sq': torch.zeros(1)} for i in range(params)}
    log = {f'train/loss_{i}': HistoryBuffer(list(np.linspace(0, 1, 200)), [1] * 200)
           for i in range(20)}
    classes = tuple(f'class_{i}' for i in range(80))
    return {
        'meta': {'epoch': 12, 'iter': 90000, 'seed': 42, 'cfg': 'x' * 20000,
                 'dataset_meta': {'classes': classes, 'palette': [(i, i, i) for i in range(80)]}},
        'state_dict': weights, 'ema_state_dict': collections.OrderedDict(weights),
        'optimizer': {'state': state, 'param_groups': [
            {'lr': 1e-4, 'betas': (0.9, 0.999), 'eps': 1e-8, 'weight_decay': 0.05,
             'amsgrad': False, 'params': list(range(params)), 'initial_lr': 1e-4}]},
        'message_hub': {'log_scalars': log, 'runtime_info': {'epoch': 12, 'eta': np.float64(1)},
                        'resumed_keys': {'epoch': True}},
        'param_schedulers': [{'base_lrs': [1e-4], 'last_step': 12, 'gamma': 0.1,
                              'milestones': collections.Counter([8, 11]), '_last_lr': [1e-5]}],
    }


def _saved(obj: object, legacy: bool = False) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer, _use_new_zipfile_serialization=not legacy)
    return buffer.getvalue()


TRUSTED = _saved(training_state())
SAMPLES = [TRUSTED, _saved(training_state(), legacy=True), _saved([torch.zeros(3)] * 2),
           _saved(torch.nn.Linear(2, 2).state_dict())]


def _pickle_of(data: bytes) -> tuple[bytes, dict[str, bytes]]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        records = {info.filename.rsplit('/', 1)[1]: archive.read(info)
                   for info in archive.infolist() if '/data/' in info.filename}
        return archive.read('archive/data.pkl'), records


def _chunks(pickle_bytes: bytes) -> list[bytes]:
    ends = [pos for _, _, pos in pickletools.genops(pickle_bytes)][1:] + [len(pickle_bytes)]
    return [pickle_bytes[a:b] for a, b in zip([0] + ends, ends)]


REAL = [_pickle_of(data) for data in SAMPLES if data[:2] == b'PK']
CHUNKS = sorted({chunk for pickle_bytes, _ in REAL for chunk in _chunks(pickle_bytes)})
NAMES = [*decode.ALLOWED_GLOBALS, ('numpy.core.multiarray', '_reconstruct'),
         ('__builtin__', 'set'), ('os', 'system'), ('builtins', 'eval'), ('torch', 'load')]
WORDS = ['storage', 'cpu', '0', '1', 'min', 'mean', 'latin1', 'f8', 'b1', 'O8', '<', '|',
         '_metadata', 'version', 'assign', 'max_length', '_log_history', '_count_history',
         'statistics_methods', '__init__', 'archive']


def _sized(prefix: str, data: bytes, lie: int) -> bytes:
    """``data`` after its length, which ``lie`` changes (within what ``prefix`` can hold)."""
    return struct.pack(prefix, max(0, len(data) + lie) % (256 if prefix == '<B' else 2 ** 31)
                       ) + data


_small = st.integers(-3, 300)
_lie = st.sampled_from([0, 0, 0, 0, 1, -1, 1000])
ARGS = {
    'uint1': _small.map(lambda n: bytes([n % 256])),
    'uint2': _small.map(lambda n: struct.pack('<H', n % 65536)),
    'int4': st.integers(-2 ** 31, 2 ** 31 - 1).map(lambda n: struct.pack('<i', n)),
    'uint4': _small.map(lambda n: struct.pack('<I', n % 2 ** 32)),
    'uint8': st.integers(0, 2 ** 64 - 1).map(lambda n: struct.pack('<Q', n)),
    'long1': st.tuples(st.binary(max_size=12), _lie).map(lambda a: _sized('<B', *a)),
    'long4': st.tuples(st.binary(max_size=12), _lie).map(lambda a: _sized('<i', *a)),
    'decimalnl_short': st.one_of(_small.map(lambda n: b'%d\n' % n), st.just(b'01\n')),
    'decimalnl_long': st.integers().map(lambda n: b'%dL\n' % n),
    'floatnl': st.floats().map(lambda f: repr(f).encode() + b'\n'),
    'float8': st.floats().map(lambda f: struct.pack('>d', f)),
    'unicodestringnl': st.text(max_size=8).map(
        lambda s: s.encode('raw-unicode-escape').replace(b'\n', b'') + b'\n'),
    'stringnl': st.text('abc\\\'"x', max_size=6).map(lambda s: repr(s).encode() + b'\n'),
    'stringnl_noescape': st.sampled_from(WORDS).map(lambda s: s.encode() + b'\n'),
    'stringnl_noescape_pair': st.sampled_from(NAMES).map(lambda n: f'{n[0]}\n{n[1]}\n'.encode()),
}
for _name, _prefix in (('1', '<B'), ('4', '<i'), ('8', '<Q')):
    _text = st.one_of(st.sampled_from(WORDS), st.text(max_size=8)).map(
        lambda s: s.encode('utf-8', 'surrogatepass'))
    for _kind, _data in (('unicodestring', _text), ('bytes', st.binary(max_size=8)),
                         ('string', _text), ('bytearray', st.binary(max_size=8))):
        ARGS[_kind + _name] = st.tuples(_data, _lie).map(
            lambda a, p=_prefix: _sized(p, *a))
OPCODES = [op for op in pickletools.opcodes]


@st.composite
def opcode(draw) -> bytes:
    """Any opcode of protocols 0-5 with a generated argument."""
    op = draw(st.sampled_from(OPCODES))
    return op.code.encode('latin-1') + (draw(ARGS[op.arg.name]) if op.arg else b'')


def _global(name: tuple[str, str]) -> bytes:
    return f'c{name[0]}\n{name[1]}\n'.encode()


PART = st.one_of(
    st.sampled_from(CHUNKS), st.sampled_from(CHUNKS), opcode(),
    st.sampled_from(NAMES).map(_global),
    st.sampled_from(WORDS).map(lambda w: b'X' + struct.pack('<I', len(w)) + w.encode()),
    st.tuples(st.sampled_from(['0', '1', '9']), st.integers(0, 64),
              st.sampled_from(list(decode.STORAGE_DTYPES))).map(
        lambda a: persistent_storage(*a)),
    st.tuples(st.sampled_from(list(crafted.FLOODS.values())), st.integers(1, 2000)).map(
        lambda a: a[0] * a[1]),
    st.integers(1, 2000).map(lambda n: b'}(' + b'N'.join(
        crafted.long1(k * crafted.HASH_MODULUS) for k in range(n)) + b'Nu'),
)


@st.composite
def programs(draw) -> tuple[bytes, dict[str, bytes]]:
    """A pickle and its storage records: a real one edited, or one made of parts."""
    if draw(st.booleans()):
        pickle_bytes, records = draw(st.sampled_from(REAL))
        chunks = _chunks(pickle_bytes)
        for _ in range(draw(st.integers(0, 4))):
            at = draw(st.integers(0, len(chunks) - 1))
            edit = draw(st.sampled_from(['drop', 'dup', 'insert', 'swap']))
            if edit == 'drop':
                del chunks[at]
            elif edit == 'dup':
                chunks.insert(at, chunks[at])
            elif edit == 'insert':
                chunks.insert(at, draw(PART))
            else:
                other = draw(st.integers(0, len(chunks) - 1))
                chunks[at], chunks[other] = chunks[other], chunks[at]
        return b''.join(chunks), dict(records)
    parts = draw(st.lists(PART, max_size=40))
    stop = draw(st.sampled_from([b'.', b'.', b'']))
    records = {key: bytes(draw(st.integers(0, 64))) for key in ('0', '1')}
    return program(*parts, stop), records


def _legacy(pickle_bytes: bytes, records: dict[str, bytes]) -> bytes:
    import pickle
    out = io.BytesIO()
    for header in (0x1950a86a20f9469cfc6c, 1001, {'protocol_version': 1001,
                                                 'little_endian': True}):
        pickle.dump(header, out, protocol=2)
    out.write(pickle_bytes)
    pickle.dump(sorted(records), out, protocol=2)
    for key in sorted(records):
        out.write(struct.pack('<q', len(records[key]) // 4) + records[key])
    return out.getvalue()


@st.composite
def torch_files(draw) -> bytes:
    """A torch file: a program packed as a (damaged) zip archive or legacy file."""
    pickle_bytes, records = draw(programs())
    if draw(st.integers(0, 4)) == 0:
        data = _legacy(pickle_bytes, records)
    else:
        method = draw(st.sampled_from([zipfile.ZIP_STORED] * 6 + [
            zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA]))
        extra = {'0': bytes(draw(st.integers(0, 8)))} if draw(st.integers(0, 9)) == 0 else None
        data = torch_zip(pickle_bytes, records, method, extra)
    if draw(st.integers(0, 3)) == 0:  # lie, flip or cut bytes of the container
        data = bytearray(data)
        for _ in range(draw(st.integers(1, 4))):
            at = draw(st.integers(0, len(data) - 1))
            data[at] = draw(st.integers(0, 255))
        data = bytes(data[:draw(st.integers(1, len(data)))])
    return bytes(data)


#: How each budget family of :mod:`tests.checkpoint.crafted` makes a file of about ``size``
#: bytes (with what else it draws).
ATTACKS = {
    'codecs_copies': lambda draw, size: crafted.codecs_copies(
        length := draw(st.integers(1, max(1, size // 2))), max(1, (size - length) // 8)),
    'numpy_copies': lambda draw, size: crafted.numpy_copies(
        nbytes := draw(st.integers(8, max(8, size // 2))), max(1, (size - nbytes) // 8)),
    'flood': lambda draw, size: crafted.flood(draw(st.sampled_from(sorted(crafted.FLOODS))),
                                              size),
    'colliding_int_keys': lambda draw, size: crafted.colliding_int_keys(size // 12),
    'colliding_key_dicts': lambda draw, size: crafted.colliding_key_dicts(
        keys := draw(st.integers(1, 1100)), max(1, (size - 18 * keys) // (6 * keys))),
    'colliding_float_keys': lambda draw, size: crafted.colliding_float_keys(size // 11),
    'colliding_lookups': lambda draw, size: crafted.colliding_lookups(
        draw(st.sampled_from([56, 64, 65, 200])), max(1, size // 3)),
    'many_int_keys': lambda draw, size: crafted.many_int_keys(size // 12),
    'equal_str_keys': lambda draw, size: crafted.equal_str_keys(
        length := draw(st.integers(1, max(1, size // 4))), max(1, (size - 2 * length) // 4),
        draw(st.sampled_from(['dict', 'set']))),
    'deep_lists': lambda draw, size: crafted.deep_lists(max(2, size // 2)),
    'deep_tuples': lambda draw, size: crafted.deep_tuples(size),
    'shared_dag': lambda draw, size: crafted.shared_dag(draw(st.integers(1, 120))),
    'absent_storages': lambda draw, size: crafted.absent_storages(
        max(1, size // 150), draw(st.sampled_from([0, 1, 10 ** 9, 2 ** 31 - 1]))),
    'zip_extra_fields': lambda draw, size: crafted.zip_extra_fields(max(1, size >> 17)),
}


def largest_attacks(size: int) -> list[bytes]:
    """A file of each budget family of about ``size`` bytes, with the choices that cost the
    most, and each also in the legacy format."""
    files = [crafted.codecs_copies(size // 2, size // 16), crafted.numpy_copies(size // 2,
                                                                               size // 16),
             *(crafted.flood(opcode, size) for opcode in sorted(crafted.FLOODS)),
             crafted.colliding_int_keys(size // 12), crafted.colliding_key_dicts(1024,
                                                                                 size // 6144),
             crafted.colliding_float_keys(size // 11), crafted.colliding_lookups(64, size // 3),
             crafted.many_int_keys(min(1024, size // 12)), crafted.equal_str_keys(size // 4,
                                                                              size // 8),
             crafted.equal_str_keys(size // 4, size // 8, 'set'),
             crafted.deep_lists(size // 2), crafted.deep_tuples(size), crafted.shared_dag(100),
             crafted.absent_storages(size // 150), crafted.zip_extra_fields(size >> 17)]
    return files + [_legacy(*_pickle_of(data)) for data in files]


@st.composite
def budget_attacks(draw, max_bytes: int = 1 << 14) -> bytes:
    """A file of a budget family of :mod:`tests.checkpoint.crafted`, of up to about
    ``max_bytes`` (the largest size, a quarter, 1/16 or any), as a zip or legacy file."""
    size = draw(st.one_of(st.sampled_from([max_bytes, max_bytes >> 2, max_bytes >> 4]),
                          st.integers(256, max_bytes)))
    data = ATTACKS[draw(st.sampled_from(sorted(ATTACKS)))](draw, size)
    return _legacy(*_pickle_of(data)) if draw(st.integers(0, 3)) == 0 else data


_DTYPES = st.sampled_from(['F32', 'F16', 'BF16', 'F64', 'I64', 'I32', 'U8', 'BOOL', 'XX'])


@st.composite
def safetensors_files(draw) -> bytes:
    """A safetensors file whose header may lie about shapes, offsets and its own length."""
    header = {}
    for name in draw(st.lists(st.sampled_from(['a', 'b', 'c']), max_size=3, unique=True)):
        shape = draw(st.lists(st.sampled_from([0, 1, 2, 3, 2 ** 31, 2 ** 62]), max_size=3))
        start = draw(st.integers(0, 64))
        header[name] = {'dtype': draw(_DTYPES), 'shape': shape,
                        'data_offsets': [start, start + draw(st.integers(-4, 64))]}
    if draw(st.booleans()):
        header['__metadata__'] = draw(st.dictionaries(st.text(max_size=4), st.one_of(
            st.text(max_size=4), st.integers()), max_size=2))
    text = json.dumps(header).encode()
    body = bytes(draw(st.integers(0, 96)))
    return struct.pack('<Q', len(text) + draw(_lie)) + text + body


# --------------------------------------------------------------------------- checks
CLOSED = (type(None), bool, int, float, complex, str, bytes, torch.dtype, torch.device,
          torch.Tensor, torch.nn.Parameter, np.ndarray, HistoryBuffer,
          *(np.dtype(name).type for name in decode.NUMPY_DTYPES))
CONTAINERS = (list, tuple, dict, collections.OrderedDict, collections.Counter, set, frozenset,
              torch.Size)


def assert_closed(value: object, depth: int = 0) -> None:
    """Fail unless ``value`` is made of the decoder's closed set of types."""
    assert depth <= decode.MAX_DEPTH
    kind = type(value)
    assert kind in CLOSED or kind in CONTAINERS, kind
    if isinstance(value, dict):
        assert all(type(k) in (str, int, float, bool, type(None), bytes) for k in value)
        value = value.values()
    if kind in CONTAINERS:
        for item in value:
            assert_closed(item, depth + 1)
    elif kind in (torch.Tensor, torch.nn.Parameter):
        assert value.device.type == 'cpu' and value.layout is torch.strided
        nbytes = value.untyped_storage().nbytes()
        assert value.numel() * value.element_size() <= nbytes
    elif kind is int:
        assert value.bit_length() <= decode.MAX_INT_BITS


def assert_same(got: object, expected: object, where: str = 'value') -> None:
    """Recursively equal, of the same types; tensors and arrays of equal dtype and data."""
    assert type(got) is type(expected), f'{where}: {type(got)} vs {type(expected)}'
    if isinstance(expected, torch.Tensor):
        assert got.dtype == expected.dtype and got.shape == expected.shape, where
        assert got.stride() == expected.stride() and torch.equal(got, expected), where
        assert got.requires_grad == expected.requires_grad, where
    elif isinstance(expected, np.ndarray):
        assert got.dtype == expected.dtype and np.array_equal(got, expected), where
    elif isinstance(expected, HistoryBuffer):
        assert got.max_length == expected.max_length, where
        assert_same(got.data, expected.data, where)
    elif isinstance(expected, dict):
        assert list(got) == list(expected), where
        for key in expected:
            assert_same(got[key], expected[key], f'{where}[{key!r}]')
        if hasattr(expected, '_metadata'):
            assert got._metadata == expected._metadata, where
    elif isinstance(expected, (list, tuple)):
        assert len(got) == len(expected), where
        for i, (a, b) in enumerate(zip(got, expected)):
            assert_same(a, b, f'{where}[{i}]')
    elif isinstance(expected, float) and math.isnan(expected):
        assert math.isnan(got), where
    else:
        assert got == expected, f'{where}: {got!r} vs {expected!r}'
