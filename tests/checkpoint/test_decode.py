"""Decoding torch.save files: exactly the names the decoder knows, closed values, a budget."""
import collections
import io
import re
import struct
import time
import traceback

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer, MessageHub
from mmengine.runner import save_checkpoint

from cvt_backbone import CheckpointError, read_checkpoint
from cvt_backbone.checkpoint import decode
from tests.checkpoint import crafted
from tests.checkpoint.strategies import (
    assert_closed,
    assert_same,
    detector_training_state,
    training_state,
)


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


@pytest.mark.parametrize('name', crafted.REFUSED_OPCODES)
def test_opcodes_torch_save_never_writes_are_refused_by_name(name):
    with pytest.raises(CheckpointError, match=rf'Refused .*the opcode {name} '):
        read_checkpoint(crafted.torch_zip(crafted.program(crafted.REFUSED_OPCODES[name]), {}))


def test_no_file_changes_how_later_files_read(tmp_path):
    """A file that sets the state of every name the decoder knows (and of what calling it
    makes) is refused, and a trusted file then reads as torch.load reads it."""
    trusted = tmp_path / 'trusted.pth'
    torch.save(training_state(), trusted)
    for name in decode.ALLOWED_GLOBALS:
        for called in (False, True):
            with pytest.raises(CheckpointError):
                read_checkpoint(crafted.build_on_allowed_name(name, called))
    assert_same(read_checkpoint(trusted), torch.load(trusted, weights_only=False))
    first, second = read_checkpoint(trusted), read_checkpoint(trusted)
    assert first['p'].data_ptr() != second['p'].data_ptr()  # no storage shared across reads


def test_state_dict_metadata_keeps_only_module_versions(tmp_path):
    """PyTorch's load flags (``assign`` and the like) are never taken from a file."""
    weights = torch.nn.BatchNorm1d(2).state_dict()
    weights._metadata[''].update(assign_to_params_buffers=True, assign=True)
    weights._metadata['odd'] = 'not a dict'
    torch.save({'state_dict': weights}, tmp_path / 'flags.pth')
    loaded = read_checkpoint(tmp_path / 'flags.pth')['state_dict']
    assert loaded._metadata == {'': {'version': 2}}
    assert list(loaded) == list(weights)


def test_integers_are_bounded_and_containers_stay_closed():
    huge = crafted.program(b'\x8a\x90' + b'\x01' * 144 + b'.')  # a LONG1 of 1152 bits
    with pytest.raises(CheckpointError, match='an integer has 1145 bits'):
        read_checkpoint(crafted.torch_zip(huge, {}))
    value = read_checkpoint(crafted.torch_zip(crafted.program(b'}(K\x01N\x88]u.'), {}))
    assert value == {1: []} and type(value) is dict  # True is the key 1 again: it replaces

@pytest.mark.skipif(not hasattr(torch.serialization, 'add_safe_globals'),
                    reason=f'torch {torch.__version__} has no add_safe_globals (torch 2.4+): '
                           f'there is no list of its own to widen')
def test_torch_widening_its_own_list_does_not_widen_ours(tmp_path):
    """torch.distributed (which MMEngine imports) adds exceptions, FrameSummary and DeviceMesh
    to torch's weights-only list; add more, and nothing of it reaches this reader."""
    import torch.distributed  # noqa: F401
    extra = [traceback.FrameSummary, RuntimeError, collections.OrderedDict]
    torch.serialization.add_safe_globals(extra)
    try:
        path = crafted.frame_summary(tmp_path, target=__file__)
        with pytest.raises(CheckpointError, match='traceback.FrameSummary'):
            read_checkpoint(path)
        torch.save({'c': collections.OrderedDict(a=RuntimeError('x'))}, tmp_path / 'error.pth')
        with pytest.raises(CheckpointError, match='builtins.RuntimeError'):
            read_checkpoint(tmp_path / 'error.pth')
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
    full = dict(decode.ALLOWED_GLOBALS)
    for key in needed:
        monkeypatch.setattr(decode, 'ALLOWED_GLOBALS', {k: v for k, v in full.items()
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
    torch.save({'weights': weights, 'size': torch.Size([2, 3]), 'set': {1, 2}, **{
        key: value for key, value in training_state().items() if key != 'log'}},
        path, _use_new_zipfile_serialization=not legacy)
    loaded = read_checkpoint(path)
    assert_closed(loaded)
    assert_same(loaded, torch.load(path, weights_only=False))
    view = loaded['weights']['view']
    assert view.untyped_storage().data_ptr() == loaded['weights']['a'].untyped_storage(
    ).data_ptr()  # views of one storage stay views, as torch.load keeps them


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


def test_legacy_storage_sizes_must_match(tmp_path):
    path = tmp_path / 'legacy.pth'
    torch.save({'w': torch.ones(3)}, path, _use_new_zipfile_serialization=False)
    data = path.read_bytes()
    path.write_bytes(data[:-20] + struct.pack('<q', 4) + data[-12:])
    with pytest.raises(CheckpointError, match=r'storage \d+ has the wrong size'):
        read_checkpoint(path)


def test_shared_references_cost_once_but_count_each_time():
    """A list referenced from many places reads as one object, within the budget."""
    shared = crafted.program(b']q\x00(', b'N' * 100, b'e0](', b'h\x00' * 1000, b'e.')
    value = read_checkpoint(crafted.torch_zip(shared, {}))
    assert len(value) == 1000 and all(item is value[0] for item in value)


# --------------------------------------------------------------------------- budgets
@pytest.fixture
def budgets(monkeypatch):
    """The budgets of the reads a test makes, as each stands when its read ends."""
    made = []

    class Recording(decode._Budget):
        def __init__(self, size: int) -> None:
            super().__init__(size)
            made.append(self)

    monkeypatch.setattr(decode, '_Budget', Recording)
    return made


#: Ints that hash alike are 2**61 - 1 apart: within 64 bits, at most 12 share a hash.
BIG_INT_KEY = r'a dict key or set item is an int of \d+ bits \(int keys hold at most 64\)'
#: Each family of amplification and superlinear work (files of 1-4 MB, but for the DAG's
#: 1 kB), and the words of its refusal. Read with the budget checked after the read, the
#: first two built 2 GB, the floods 400-900 MB, and the colliding ints took minutes.
BUDGET_ATTACKS = {
    'codecs_encode': (lambda: crafted.codecs_copies(1 << 20, 2000),
                      r'(steps|memory).*_codecs\.encode'),
    'numpy_copies': (lambda: crafted.numpy_copies(1 << 20, 2000), r'memory.*numpy arrays'),
    'empty_sets': (lambda: crafted.flood('EMPTY_SET', 1_000_000), 'bytes of memory'),
    'empty_dicts': (lambda: crafted.flood('EMPTY_DICT', 1_000_000), 'bytes of memory'),
    'empty_lists': (lambda: crafted.flood('EMPTY_LIST', 1_000_000), 'bytes of memory'),
    'colliding_ints': (lambda: crafted.colliding_int_keys(250_000), BIG_INT_KEY),
    'colliding_key_dicts': (lambda: crafted.colliding_key_dicts(1024, 400), BIG_INT_KEY),
    'colliding_floats': (lambda: crafted.colliding_float_keys(100_000), BIG_INT_KEY),
    'colliding_lookups': (lambda: crafted.colliding_lookups(1000, 20_000), BIG_INT_KEY),
    'many_int_keys': (lambda: crafted.many_int_keys(250_000),
                      'a dict has more than 1024 int, float, bool or None keys'),
    'equal_str_keys': (lambda: crafted.equal_str_keys(1 << 20, 250_000),
                       r'steps.*str and bytes keys'),
    'equal_set_items': (lambda: crafted.equal_str_keys(1 << 20, 1_000_000, 'set'),
                        r'steps.*str and bytes keys'),
    'deep_lists': (lambda: crafted.deep_lists(300_000), 'nested more than 100 deep'),
    'deep_tuples': (lambda: crafted.deep_tuples(2_000_000), 'nested more than 100 deep'),
    'shared_dag': (lambda: crafted.shared_dag(99), 'counting every shared reference'),
    'absent_storages': (lambda: crafted.absent_storages(10_000), 'missing or does not hold'),
}


@pytest.mark.parametrize('family', BUDGET_ATTACKS)
def test_amplification_and_quadratic_work_are_refused_by_name(family):
    make, words = BUDGET_ATTACKS[family]
    data = make()
    start = time.process_time()
    with pytest.raises(CheckpointError, match=words) as error:
        read_checkpoint(data)
    assert time.process_time() - start < 10, 'refused, but slowly'
    assert str(error.value).startswith('Refused to load checkpoint') and '\n' not in str(
        error.value)


@pytest.mark.parametrize('opcode', ['DUP', 'MEMOIZE'])
def test_floods_of_cheap_references_are_accepted_within_the_budget(opcode, budgets):
    """References to one value (and memo entries numbered in order) cost a few bytes each:
    2 MB of them decode, using a fraction of the budget."""
    data = crafted.flood(opcode, 2_000_000)
    value = read_checkpoint(data)
    assert value == [None] * (2_000_001 if opcode == 'DUP' else 1)
    budget, = budgets
    assert budget.memory - budget.memory_left < decode.MEMORY_PER_BYTE / 2 * len(data)


def test_the_memo_takes_any_order_of_indices_in_a_dict():
    """Indices out of order (which pickle never writes) still read, from a dict whose keys
    hash with Python's random seed."""
    last = b'\xff\xff\xff\xff'
    value = read_checkpoint(crafted.torch_zip(crafted.program(
        b'Nr', last, b'0K\x07q\x00', b'0K\x08\x94', b'0(j', last, b'h\x00h\x02t.'), {}))
    assert value == (None, 7, 8)


@pytest.mark.parametrize('legacy', [False, True])
def test_real_checkpoints_stay_well_within_their_budgets(tmp_path, budgets, legacy):
    """A training checkpoint shaped like a CvT-W24 detector's (tiny tensors: its pickle is
    nearly all of the file) needs at most half its memory budget per byte, an eighth of its
    work budget per byte, and fewer int keys per dict than allowed."""
    buffer = io.BytesIO()
    torch.save(detector_training_state(), buffer, _use_new_zipfile_serialization=not legacy)
    data = buffer.getvalue()
    decoded = read_checkpoint(data)
    assert len(decoded['optimizer']['state']) == 700 < decode.MAX_PREDICTABLE_KEYS
    budget, = budgets
    assert budget.memory - budget.memory_left < decode.MEMORY_PER_BYTE / 2 * len(data)
    assert budget.work - budget.work_left < decode.WORK_PER_BYTE / 8 * len(data)


def test_a_sealed_container_is_never_changed():
    """A list put into another is sealed: appending to it later (which could make it contain
    itself, or change a weight already counted) is refused; filling it first is not."""
    filled_first = crafted.program(b']q\x00K\x01a0(h\x00h\x00l.')
    assert read_checkpoint(crafted.torch_zip(filled_first, {})) == [[1], [1]]
    changed_after = crafted.program(b']q\x000(h\x00h\x00l0h\x00K\x01a.')
    with pytest.raises(CheckpointError, match='changes a list after putting it into another'):
        read_checkpoint(crafted.torch_zip(changed_after, {}))
    cycle = crafted.program(b']q\x00]q\x01h\x00a0h\x00h\x01a.')  # L1 holds L0, then L0 L1
    with pytest.raises(CheckpointError, match='changes a list after putting it into another'):
        read_checkpoint(crafted.torch_zip(cycle, {}))


MMENGINE_SCHEDULERS = {
    'MultiStepLR': [dict(type='MultiStepLR', milestones=[1, 2], by_epoch=True)],
    'CosineAnnealingLR': [dict(type='CosineAnnealingLR', T_max=2, by_epoch=True)],
    'PolyLR': [dict(type='PolyLR', eta_min=0.001, power=1.0, by_epoch=True)],
    'LinearLR+MultiStepLR': [dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0,
                                  end=2), dict(type='MultiStepLR', milestones=[1])],
}


class ToyDataset(torch.utils.data.Dataset):
    """Eight samples of a regression, with the meta a detection dataset gives its checkpoints."""

    metainfo = {'classes': ('cat', 'dog'), 'palette': [(220, 20, 60), (0, 0, 142)]}

    def __len__(self) -> int:
        return 8

    def __getitem__(self, index: int) -> dict:
        return {'inputs': torch.full((2, ), float(index)), 'labels': torch.ones(1)}


def train_and_save(folder, schedulers: list, optim_wrapper: dict | None = None):
    """Train a toy model one epoch with MMEngine's Runner (EMA on); return its checkpoint."""
    from mmengine.model import BaseModel
    from mmengine.runner import Runner

    class Toy(BaseModel):
        def __init__(self):
            super().__init__()
            self.linear, self.norm = torch.nn.Linear(2, 1), torch.nn.BatchNorm1d(1)

        def forward(self, inputs, labels=None, mode='tensor'):
            out = self.norm(self.linear(inputs))
            return {'loss': ((out - labels) ** 2).mean()} if mode == 'loss' else out

    runner = Runner(
        model=Toy(), work_dir=str(folder), experiment_name=f'decode-{folder.name}',
        train_dataloader=dict(dataset=ToyDataset(), batch_size=4,
                              sampler=dict(type='DefaultSampler', shuffle=True),
                              collate_fn=dict(type='default_collate')),
        optim_wrapper=optim_wrapper or dict(optimizer=dict(type='AdamW', lr=0.01)),
        param_scheduler=schedulers, train_cfg=dict(by_epoch=True, max_epochs=1),
        custom_hooks=[dict(type='EMAHook')], randomness=dict(seed=3), log_level='WARNING',
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1)))
    runner.train()
    return folder / 'epoch_1.pth'


@pytest.mark.slow
@pytest.mark.parametrize('scheduler', MMENGINE_SCHEDULERS)
def test_real_mmengine_checkpoints_decode_as_torch_loads_them(tmp_path, scheduler):
    """A short run of MMEngine's Runner (EMA, a dataset's meta, the message hub) saves its
    checkpoint; the decoder reads it as ``torch.load(weights_only=False)`` does."""
    path = train_and_save(tmp_path, MMENGINE_SCHEDULERS[scheduler])
    decoded = read_checkpoint(path)
    assert_same(decoded, torch.load(path, weights_only=False))
    assert decoded['meta']['dataset_meta'] == ToyDataset.metainfo and 'ema_state_dict' in decoded


@pytest.mark.slow
def test_one_cycle_checkpoints_are_refused_by_name(tmp_path):
    """MMEngine's OneCycleLR keeps its annealing function as a bound method, so its state
    pickles the whole scheduler object (and the optimizer wrapper it holds): that is code
    and objects, not values, and is refused naming the class."""
    path = train_and_save(tmp_path, [dict(type='OneCycleLR', eta_max=0.1, total_steps=4,
                                          by_epoch=False)])
    with pytest.raises(CheckpointError, match='needs mmengine.optim.scheduler.param_scheduler'
                                              '.OneCycleParamScheduler'):
        read_checkpoint(path)


@pytest.mark.slow
def test_mixed_precision_checkpoint_decodes(tmp_path):
    """AmpOptimWrapper's loss scaler state (written by hand where AMP needs a GPU)."""
    from mmengine.runner import save_checkpoint
    try:
        path = train_and_save(tmp_path, MMENGINE_SCHEDULERS['MultiStepLR'], dict(
            type='AmpOptimWrapper', dtype='bfloat16', optimizer=dict(type='SGD', lr=0.1)))
        state = torch.load(path, weights_only=False)
    except AssertionError:  # MMEngine's AMP wrapper asks for CUDA, NPU, MLU or MUSA
        path = train_and_save(tmp_path, MMENGINE_SCHEDULERS['MultiStepLR'])
        state = torch.load(path, weights_only=False)
        state['optimizer']['loss_scaler'] = {'scale': 65536.0, 'growth_factor': 2.0,
                                             'backoff_factor': 0.5, 'growth_interval': 2000,
                                             '_growth_tracker': 0}
        save_checkpoint(state, str(path))
    assert 'loss_scaler' in state['optimizer']
    assert_same(read_checkpoint(path), torch.load(path, weights_only=False))
