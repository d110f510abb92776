"""Training through tools/train.py survives interruptions, and ranks stay in step.

Every run trains the demo classifier on 16 generated 32x32 images (2 iterations per epoch, 2
epochs) on the CPU with a fixed seed. A run resumed from a checkpoint, or killed with SIGKILL
after one and resumed with ``--resume``, must end with exactly the weights of a run that was
never interrupted.

The comparison is bit for bit because all randomness restarts from the seed at each epoch:
``DefaultSampler`` shuffles with ``seed + epoch``, and the augmentation (RandomFlip) runs in a
data-loader worker that is re-created, and re-seeded with the seed, every epoch
(``persistent_workers=False``). MMEngine does not store random-number-generator states in its
checkpoints, so randomness that carries over from one epoch to the next (a persistent worker,
augmentation in the main process, stochastic depth) differs after a resume.
"""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from cvt_backbone import read_checkpoint
from cvt_backbone.checkpoint.io import TMP_SUFFIX
from tests.helpers import ENV, ROOT
from tools.demo.shapes import make_classification_set

DEMO_CONFIG = ROOT / 'configs' / 'demo' / 'cvt-tiny_shapes-cls.py'
MAX_EPOCHS = 2
TIMEOUT = 300


@pytest.fixture(scope='module')
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp('data') / 'shapes_cls'
    make_classification_set(str(root), num_train=16, num_val=4, size=32)
    return root


def write_config(path: Path, data_root: Path, batch_size: int = 8,
                 custom_hooks: list[dict] | None = None) -> Path:
    """A config inheriting the demo one: tiny data, a checkpoint every epoch, no validation."""
    path.write_text(textwrap.dedent(f"""
        _base_ = {str(DEMO_CONFIG)!r}
        custom_imports = dict(imports=['cvt_backbone', 'tests.training_hooks'],
                              allow_failed_imports=False)
        train_dataloader = dict(batch_size={batch_size}, num_workers=1, persistent_workers=False,
                                dataset=dict(data_root={str(data_root)!r}))
        val_dataloader = dict(num_workers=0, persistent_workers=False,
                              dataset=dict(data_root={str(data_root)!r}))
        test_dataloader = val_dataloader
        train_cfg = dict(max_epochs={MAX_EPOCHS}, val_interval=100)
        default_hooks = dict(
            checkpoint=dict(interval=1, max_keep_ckpts=-1, save_best=None),
            logger=dict(interval=1))
        randomness = dict(seed=0, deterministic=True)
        custom_hooks = {custom_hooks or []!r}
    """))
    return path


def train(config: Path, work_dir: Path, *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, str(ROOT / 'tools' / 'train.py'), str(config), '--work-dir',
         str(work_dir), *args], env=ENV, capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def final_weights(work_dir: Path) -> dict[str, torch.Tensor]:
    return read_checkpoint(work_dir / f'epoch_{MAX_EPOCHS}.pth')['state_dict']


def assert_same_weights(actual: dict, expected: dict) -> None:
    assert actual.keys() == expected.keys()
    different = [k for k in expected if not torch.equal(actual[k], expected[k])]
    assert not different, f'{len(different)} tensors differ, e.g. {different[:5]}'


def assert_only_complete_checkpoints(work_dir: Path) -> None:
    leftovers = [p.name for p in work_dir.rglob(f'*{TMP_SUFFIX}')]
    assert not leftovers, f'temporary files left behind: {leftovers}'
    for path in work_dir.glob('*.pth'):
        assert 'state_dict' in read_checkpoint(path), path


@pytest.fixture(scope='module')
def uninterrupted(data_root, tmp_path_factory) -> Path:
    """The work dir of a run that is never interrupted."""
    tmp = tmp_path_factory.mktemp('uninterrupted')
    train(write_config(tmp / 'cfg.py', data_root), tmp / 'work')
    return tmp / 'work'


def test_resume_from_a_checkpoint_ends_with_the_same_weights(data_root, uninterrupted, tmp_path):
    work = tmp_path / 'work'
    resumed = train(write_config(tmp_path / 'cfg.py', data_root), work,
                    '--resume', str(uninterrupted / 'epoch_1.pth'))
    assert 'resumed epoch: 1, iter: 2' in resumed.stdout + resumed.stderr
    assert not (work / 'epoch_1.pth').exists()  # resumed, not retrained
    assert_same_weights(final_weights(work), final_weights(uninterrupted))


def test_killed_and_resumed_run_ends_with_the_same_weights(data_root, uninterrupted, tmp_path):
    config, work = write_config(tmp_path / 'cfg.py', data_root), tmp_path / 'work'
    with open(tmp_path / 'killed.log', 'w') as log:
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / 'tools' / 'train.py'), str(config), '--work-dir',
             str(work)], env=ENV, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + TIMEOUT
            last = work / 'last_checkpoint'
            while proc.poll() is None and not (last.exists() and last.read_text().strip()):
                assert time.monotonic() < deadline, 'no checkpoint was written'
                time.sleep(0.02)
            assert proc.poll() is None, 'training ended before it could be killed'
            os.killpg(proc.pid, signal.SIGKILL)
        finally:
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    saved = Path(last.read_text().strip()).name
    epoch = int(saved.removeprefix('epoch_').removesuffix('.pth'))
    assert epoch < MAX_EPOCHS and not (work / f'epoch_{MAX_EPOCHS}.pth').exists()
    assert_only_complete_checkpoints(work)

    resumed = train(config, work, '--resume')
    assert f'resumed epoch: {epoch}, iter: {2 * epoch}' in resumed.stdout + resumed.stderr
    assert_same_weights(final_weights(work), final_weights(uninterrupted))
    assert_only_complete_checkpoints(work)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def test_two_process_training_keeps_ranks_identical(data_root, tmp_path):
    config = write_config(tmp_path / 'cfg.py', data_root, batch_size=4,
                          custom_hooks=[dict(type='SaveRankWeightsHook')])
    work = tmp_path / 'work'
    result = subprocess.run(
        ['bash', str(ROOT / 'tools' / 'dist_train.sh'), str(config), '2', '--work-dir',
         str(work)], env=dict(ENV, PORT=str(free_port())), capture_output=True, text=True,
        timeout=TIMEOUT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert 'Distributed training: True' in result.stdout + result.stderr
    ranks = [torch.load(work / f'rank{r}.pth', weights_only=True) for r in (0, 1)]
    init = torch.load(work / 'rank0_init.pth', weights_only=True)
    # Parameters, not BatchNorm statistics: MMEngine's DDP does not broadcast buffers, so each
    # rank keeps its own running statistics (the checkpoint holds rank 0's).
    assert_same_weights(ranks[1]['params'], ranks[0]['params'])
    unchanged = [k for k, v in ranks[0]['params'].items() if torch.equal(v, init['params'][k])]
    # Only the last block's query projection gets no gradient: its queries are patch tokens,
    # and a class-token classifier reads only the class token (which bypasses the projection).
    stage, block = max(tuple(map(int, re.match(r'backbone\.stages\.(\d+)\.blocks\.(\d+)\.', k)
                                   .groups())) for k in init['params'] if '.blocks.' in k)
    query = f'backbone.stages.{stage}.blocks.{block}.attn.conv_proj.q.'
    assert all(k.startswith(query) for k in unchanged), unchanged
    assert len(unchanged) < len(init['params']) / 10
    # The checkpoint holds rank 0's weights.
    assert_same_weights({k: v for k, v in final_weights(work).items()
                         if k in ranks[0]['params']}, ranks[0]['params'])
