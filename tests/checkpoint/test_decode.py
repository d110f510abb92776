"""Reading torch.save files: exactly the allow-list, whatever torch has registered, bounded."""
import collections
import re
import traceback

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer, MessageHub
from mmengine.runner import save_checkpoint

from cvt_backbone import CheckpointError, read_checkpoint
from cvt_backbone.checkpoint import decode as torchfile
from tests.checkpoint import crafted


@pytest.mark.parametrize('make, words', crafted.REFUSED.items(),
                         ids=[m.__name__ for m in crafted.REFUSED])
def test_crafted_files_are_refused_by_name(tmp_path, make, words):
    path = make(tmp_path)
    with pytest.raises(CheckpointError) as error:
        read_checkpoint(path)
    message = str(error.value)
    assert path.name in message and re.search(words, message), message
    assert '\n' not in message
    assert not (tmp_path / crafted.MARKER).exists()


@pytest.mark.skipif(not hasattr(torch.serialization, 'add_safe_globals'),
                    reason=f'torch {torch.__version__} has no add_safe_globals (torch 2.4+): '
                           f'there is no list of its own to widen')
def test_torch_widening_its_own_list_does_not_widen_ours(tmp_path):
    """torch.distributed (which MMEngine imports) adds exceptions, FrameSummary and DeviceMesh
    to torch's weights-only list; add more, and nothing of it reaches this reader."""
    import torch.distributed  # noqa: F401
    extra = [traceback.FrameSummary, RuntimeError, collections.Counter]
    torch.serialization.add_safe_globals(extra)
    try:
        path = crafted.frame_summary(tmp_path, target=__file__)
        with pytest.raises(CheckpointError, match='traceback.FrameSummary'):
            read_checkpoint(path)
        torch.save({'c': collections.Counter('ab')}, tmp_path / 'counter.pth')
        with pytest.raises(CheckpointError, match='collections.Counter'):
            read_checkpoint(tmp_path / 'counter.pth')
    finally:
        torch.serialization.clear_safe_globals()


def save_training_state(path, numpy_version_names: bool = False):
    """What MMEngine's Runner puts in a checkpoint besides tensors: the message hub.

    As measured on mmpretrain, mmdet and mmseg runs: HistoryBuffers of float64 logs and int64
    counts, a float64 ``eta`` and (mmseg) a float32 ``best_score``.
    """
    hub = MessageHub(f'hub-{path.name}')
    hub.update_scalar('train/loss', 1.25)
    hub.update_scalar('train/loss', 0.75)
    hub.update_info('eta', np.float64(12.5))
    hub.update_info('best_score', np.float32(0.5))
    save_checkpoint({'meta': {'epoch': 1, 'iter': 2, 'dtype': torch.float16},
                     'state_dict': {'w': torch.ones(2), 'p': torch.nn.Parameter(torch.ones(1))},
                     'message_hub': hub.state_dict()}, str(path))


def test_training_state_loads_and_needs_each_allowed_global(tmp_path, monkeypatch):
    path = tmp_path / 'epoch_1.pth'
    save_training_state(path)
    state = read_checkpoint(path)
    hub = state['message_hub']
    buffer = hub['log_scalars']['train/loss']
    assert isinstance(buffer, HistoryBuffer) and buffer.mean() == 1.0 and buffer.current() == .75
    assert hub['runtime_info']['best_score'] == np.float32(0.5)
    assert type(hub['runtime_info']['eta']) is np.float64
    assert state['meta']['dtype'] is torch.float16
    needed = [('mmengine.logging.history_buffer', 'HistoryBuffer'), ('builtins', 'getattr'),
              ('numpy._core.multiarray', '_reconstruct'), ('numpy._core.multiarray', 'scalar'),
              ('numpy', 'ndarray'), ('numpy', 'dtype'), ('_codecs', 'encode'),
              ('torch._utils', '_rebuild_tensor_v2'), ('torch._utils', '_rebuild_parameter'),
              ('torch', 'FloatStorage'), ('collections', 'OrderedDict'), ('torch', 'float16')]
    full = dict(torchfile.ALLOWED_GLOBALS)
    for key in needed:
        monkeypatch.setattr(torchfile, 'ALLOWED_GLOBALS', {k: v for k, v in full.items()
                                                           if k != key})
        with pytest.raises(CheckpointError, match=rf'needs {re.escape(".".join(key))}'):
            read_checkpoint(path)


#: How numpy 1 and numpy 2 name the module that pickled arrays and scalars come from.
NUMPY_PICKLE_MODULES = (b'numpy.core.multiarray\n', b'numpy._core.multiarray\n')


def test_checkpoint_written_with_the_other_numpy_major_loads(tmp_path):
    """numpy 1 pickles arrays and scalars from ``numpy.core.multiarray``, numpy 2 from
    ``numpy._core.multiarray``: a file from either loads under either. The file is written
    with the installed numpy and its module names changed to the other major's (the legacy
    format keeps the pickle editable in place)."""
    state = {'log': np.array([1.5, 2.5]), 'eta': np.float64(3.0), 'w': torch.arange(3.),
             'mask': np.array([[True, False]]), 'fortran': np.asfortranarray(np.ones((2, 3)))}
    path = tmp_path / 'other_numpy.pth'
    torch.save(state, path, _use_new_zipfile_serialization=False)
    data = path.read_bytes()
    numpy_2 = int(np.__version__.split('.')[0]) >= 2
    ours, other = NUMPY_PICKLE_MODULES[::-1] if numpy_2 else NUMPY_PICKLE_MODULES
    assert ours in data and other not in data
    path.write_bytes(data.replace(ours, other))
    loaded = read_checkpoint(path)
    assert loaded['log'].tolist() == [1.5, 2.5] and loaded['eta'] == 3.0
    assert torch.equal(loaded['w'], torch.arange(3.))
    assert loaded['mask'].tolist() == [[True, False]]
    assert np.array_equal(loaded['fortran'], state['fortran'])


@pytest.mark.parametrize('legacy', [False, True])
def test_plain_weights_round_trip_in_both_formats(tmp_path, legacy):
    weights = collections.OrderedDict(
        a=torch.randn(3, 4), b=torch.arange(6, dtype=torch.int64).view(2, 3).t(),
        c=torch.zeros(0, 5), d=torch.tensor(True), e=torch.randn(2, 2).to(torch.bfloat16))
    weights['view'] = weights['a'][1:]
    path = tmp_path / 'w.pth'
    torch.save({'state_dict': weights, 'size': torch.Size([2, 3]), 'set': {1, 2}},
               path, _use_new_zipfile_serialization=not legacy)
    loaded = read_checkpoint(path)
    for key, value in weights.items():
        assert torch.equal(loaded['state_dict'][key], value) and \
            loaded['state_dict'][key].dtype == value.dtype, key
    assert loaded['size'] == torch.Size([2, 3]) and loaded['set'] == {1, 2}


def test_a_history_buffer_keeps_only_its_default_statistics(tmp_path):
    buffer = HistoryBuffer()
    buffer.update(2.0)
    torch.save({'b': buffer}, tmp_path / 'b.pth')
    loaded = read_checkpoint(tmp_path / 'b.pth')['b']
    assert loaded.statistics('mean') == 2.0 and loaded.max_length == buffer.max_length


@pytest.mark.parametrize('cut', [100, 2000, -100])
def test_truncated_and_garbage_files_are_named(tmp_path, cut):
    good = tmp_path / 'good.pth'
    torch.save({'w': torch.randn(1000)}, good)
    data = good.read_bytes()
    bad = tmp_path / 'cut.pth'
    bad.write_bytes(data[:cut])
    with pytest.raises(CheckpointError, match=r"cut.pth'?: the (zip archive|file) is truncated"
                                              r' or corrupt'):
        read_checkpoint(bad)
    for name, content in (('garbage.pth', bytes(range(256)) * 16),
                          ('text.pth', b'not a checkpoint\n')):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(CheckpointError, match=rf'{name}.*neither a torch.save file nor '
                                                  r'a safetensors file'):
            read_checkpoint(tmp_path / name)
