"""Crafted checkpoint files, one per class of attack on loading (and a few plain bad files).

Each maker writes a file into a folder and returns its path. ``MARKER`` names the file a
code-running payload would create; tests check it never appears. The classes:

* code: pickles that call a function off the allow-list (``os.system``, ``eval`` via
  ``builtins``, ``torch.load`` itself, a ``getattr`` to reach one);
* torch-registered globals: objects torch adds to its own weights-only list at import
  (``traceback.FrameSummary``, builtin exceptions, ``DeviceMesh``);
* numpy: dtypes with fields or object type, object arrays, ndarray subclasses;
* size: stride-0 and overlapping tensors, compressed records that inflate, legacy files that
  declare more than they hold;
* state: MMEngine training state of the wrong shape (a malformed ``HistoryBuffer``).
"""
from __future__ import annotations

import builtins
import io
import os
import pickle
import struct
import sys
import traceback
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


def zip_bomb(folder: Path) -> Path:
    """A 40 MB tensor record deflated to a few kB."""
    plain = io.BytesIO()
    torch.save({'w': torch.zeros(10 ** 7)}, plain)
    plain.seek(0)
    path = folder / 'zip_bomb.pth'
    with zipfile.ZipFile(plain) as src, zipfile.ZipFile(path, 'w') as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info), compress_type=zipfile.ZIP_DEFLATED)
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
def malformed_history_buffer(folder: Path) -> Path:
    buffer = HistoryBuffer()
    buffer.update(1.0)
    buffer.__dict__['_log_history'] = 'not an array'
    return _save(folder / 'history_buffer.pth', {**_weights(), 'message_hub': {
        'log_scalars': {'loss': buffer}, 'runtime_info': {}, 'resumed_keys': {}}})


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
    zip_bomb: 'records unpack to',
    legacy_declared_size: 'more than the',
    malformed_history_buffer: 'HistoryBuffer does not hold two 1-D arrays',
}

if sys.platform != 'linux':  # os.mkfifo, and posix.system as the name of os.system
    REFUSED.pop(frame_summary)
