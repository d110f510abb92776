"""A killed and resumed run ends exactly where an uninterrupted one does.

Every run trains the demo classifier through ``tools/train.py`` on 16 generated 32x32 images
(4 iterations per epoch) on the CPU, with everything random switched on: persistent
data-loader workers, random resized crops and flips, and stochastic depth. A run SIGKILLed
right after a checkpoint was written and resumed with ``--resume`` must end with the weights
of the uninterrupted run, bit for bit: epoch-based, iteration-based (killed in the middle of
a pass over the data) and with two processes.
"""
from __future__ import annotations

import re
import socket
import textwrap
from pathlib import Path

import pytest
import torch

from cvt_backbone import read_checkpoint
from tests.helpers import ENV, ROOT, tiny_cls_config, train, train_until

pytestmark = pytest.mark.slow  # training runs in subprocesses, killed and resumed

#: Everything random on, and tests.save_stages to say when a checkpoint is complete.
RANDOM = """
custom_imports = dict(imports=['cvt_backbone', 'cvt_backbone.training', 'tests.training_hooks',
                               'tests.save_stages'], allow_failed_imports=False)
model = dict(backbone=dict(drop_path_rate=[0., 0.2, 0.3]))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=32, crop_ratio_range=(0.5, 1.0)),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
train_dataloader.update(batch_size=4, num_workers=2, persistent_workers=True)
train_dataloader['dataset']['dataset']['pipeline'] = train_pipeline
"""
ITERATION_BASED = """
train_dataloader['sampler'] = dict(type='SeededInfiniteSampler', shuffle=True)
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=10, val_interval=100)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=3),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=False, begin=3, end=10),
]
default_hooks = dict(checkpoint=dict(by_epoch=False, interval=3))
log_processor = dict(by_epoch=False)
"""
#: A complete checkpoint: ``last_checkpoint`` was just renamed into place.
SAVED = '@stage after replace last_checkpoint'
STAGES = dict(ENV, CVT_TEST_SAVE_STAGES='0.001')


def weights(path: Path) -> dict[str, torch.Tensor]:
    return read_checkpoint(path)['state_dict']


def assert_same_weights(actual: dict, expected: dict) -> None:
    assert actual.keys() == expected.keys()
    different = [k for k in expected if not torch.equal(actual[k], expected[k])]
    assert not different, f'{len(different)} tensors differ, e.g. {different[:5]}'


@pytest.fixture(scope='module')
def epoch_config(shapes_cls, tmp_path_factory) -> Path:
    return tiny_cls_config(tmp_path_factory.mktemp('epoch') / 'cfg.py', shapes_cls,
                           max_epochs=3, extra=RANDOM)


@pytest.fixture(scope='module')
def iteration_config(shapes_cls, tmp_path_factory) -> Path:
    return tiny_cls_config(tmp_path_factory.mktemp('iter') / 'cfg.py', shapes_cls,
                           extra=RANDOM + ITERATION_BASED)


@pytest.fixture(scope='module')
def uninterrupted(epoch_config, iteration_config, tmp_path_factory) -> dict[str, Path]:
    runs = {}
    for name, config in (('epoch', epoch_config), ('iteration', iteration_config)):
        runs[name] = tmp_path_factory.mktemp(f'uninterrupted_{name}')
        train(config, runs[name])
    return runs


def test_randomness_is_really_on(epoch_config, uninterrupted, tmp_path):
    """Another seed gives other weights: the comparisons below could fail."""
    train(epoch_config, tmp_path / 'work', '--cfg-options', 'randomness.seed=1')
    final = weights(tmp_path / 'work' / 'epoch_3.pth')
    reference = weights(uninterrupted['epoch'] / 'epoch_3.pth')
    assert any(not torch.equal(final[k], reference[k]) for k in reference)


def test_killed_after_an_epoch_and_resumed(epoch_config, uninterrupted, tmp_path):
    work = tmp_path / 'work'
    train_until(epoch_config, work, SAVED, env=STAGES)
    assert Path((work / 'last_checkpoint').read_text().strip()).name == 'epoch_1.pth'
    resumed = train(epoch_config, work, '--resume')
    assert 'resumed epoch: 1, iter: 4' in resumed.stdout
    assert 'holds no random state' not in resumed.stdout
    assert_same_weights(weights(work / 'epoch_3.pth'),
                        weights(uninterrupted['epoch'] / 'epoch_3.pth'))


def test_killed_in_the_middle_of_a_pass_and_resumed(iteration_config, uninterrupted, tmp_path):
    """Iteration 3 of 4 of the first pass over the data: the resumed run continues with the
    4th batch of that pass and the same augmentations, not with a new pass."""
    work = tmp_path / 'work'
    train_until(iteration_config, work, SAVED, env=STAGES)
    assert Path((work / 'last_checkpoint').read_text().strip()).name == 'iter_3.pth'
    resumed = train(iteration_config, work, '--resume')
    assert 'resumed epoch: 0, iter: 3' in resumed.stdout
    assert_same_weights(weights(work / 'iter_10.pth'),
                        weights(uninterrupted['iteration'] / 'iter_10.pth'))


def test_resume_from_a_named_checkpoint(epoch_config, uninterrupted, tmp_path):
    resumed = train(epoch_config, tmp_path / 'work', '--resume',
                    uninterrupted['epoch'] / 'epoch_2.pth')
    assert 'resumed epoch: 2, iter: 8' in resumed.stdout
    assert not (tmp_path / 'work' / 'epoch_2.pth').exists()  # resumed, not retrained
    assert_same_weights(weights(tmp_path / 'work' / 'epoch_3.pth'),
                        weights(uninterrupted['epoch'] / 'epoch_3.pth'))


def test_a_checkpoint_without_random_state_resumes_with_a_warning(epoch_config, uninterrupted,
                                                                  tmp_path):
    old = read_checkpoint(uninterrupted['epoch'] / 'epoch_2.pth')
    del old['meta']['cvt_random_state']
    torch.save(old, tmp_path / 'old.pth')
    resumed = train(epoch_config, tmp_path / 'work', '--resume', tmp_path / 'old.pth')
    assert 'resumed epoch: 2' in resumed.stdout
    assert 'The checkpoint holds no random state' in resumed.stdout
    assert (tmp_path / 'work' / 'epoch_3.pth').is_file()


def test_resume_in_an_empty_work_dir_says_so(epoch_config, tmp_path):
    result = train(epoch_config, tmp_path / 'typo', '--resume',
                   '--cfg-options', 'train_cfg.max_epochs=1')
    warning = [line for line in result.stdout.splitlines() if '--resume:' in line]
    assert len(warning) == 1 and 'WARNING' in warning[0]
    assert f"no checkpoint to resume from in {tmp_path / 'typo'}" in warning[0]
    assert 'training starts from scratch' in warning[0]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def dist_train(config: Path, work: Path, *args: object, stop: str | None = None):
    """``tools/dist_train.sh CONFIG 2``: run to the end, or kill it at ``stop``."""
    import subprocess
    command = ['bash', str(ROOT / 'tools' / 'dist_train.sh'), str(config), '2', '--work-dir',
               str(work), *map(str, args)]
    env = dict(STAGES if stop else ENV, PORT=str(free_port()))
    if stop:
        return train_until(config, work, stop, command=command, env=env)
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.fixture(scope='module')
def two_process_config(shapes_cls, tmp_path_factory) -> Path:
    return tiny_cls_config(tmp_path_factory.mktemp('dist') / 'cfg.py', shapes_cls, max_epochs=3,
                           batch_size=2, extra=RANDOM + textwrap.dedent("""
        train_dataloader.update(batch_size=2, num_workers=1)
        custom_hooks = [dict(type='SafeLoadingHook'), dict(type='RandomStateHook'),
                        dict(type='SaveRankWeightsHook')]
    """))


def test_two_processes_killed_and_resumed(two_process_config, tmp_path):
    """Each rank's random state is saved and restored: the resumed pair ends as the pair that
    was never interrupted, and the ranks agree."""
    done = tmp_path / 'uninterrupted'
    result = dist_train(two_process_config, done)
    assert 'Distributed training: True' in result.stdout + result.stderr
    # The depthwise weights have the layout of their (channels-last) gradients.
    assert 'Grad strides do not match' not in result.stdout + result.stderr
    ranks = [torch.load(done / f'rank{r}.pth', weights_only=True) for r in (0, 1)]
    assert_same_weights(ranks[1]['params'], ranks[0]['params'])
    init = torch.load(done / 'rank0_init.pth', weights_only=True)
    unchanged = [k for k, v in ranks[0]['params'].items() if torch.equal(v, init['params'][k])]
    # Only the last block's query projection gets no gradient: its queries are patch tokens,
    # and a class-token classifier reads only the class token (which bypasses the projection).
    stage, block = max(tuple(map(int, re.match(r'backbone\.stages\.(\d+)\.blocks\.(\d+)\.', k)
                                   .groups())) for k in init['params'] if '.blocks.' in k)
    query = f'backbone.stages.{stage}.blocks.{block}.attn.conv_proj.q.'
    assert all(k.startswith(query) for k in unchanged), unchanged

    work = tmp_path / 'killed'
    dist_train(two_process_config, work, stop=SAVED)
    assert Path((work / 'last_checkpoint').read_text().strip()).name == 'epoch_1.pth'
    dist_train(two_process_config, work, '--resume')
    assert_same_weights(weights(work / 'epoch_3.pth'), weights(done / 'epoch_3.pth'))
    resumed = [torch.load(work / f'rank{r}.pth', weights_only=True) for r in (0, 1)]
    for rank in (0, 1):
        assert_same_weights(resumed[rank]['params'], ranks[rank]['params'])
    # BatchNorm statistics are per rank (MMEngine's DDP does not broadcast buffers) and the
    # checkpoint holds rank 0's: rank 0 continues its own exactly.
    assert_same_weights(resumed[0]['buffers'], ranks[0]['buffers'])
