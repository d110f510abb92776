"""tools/train.py: one run per work dir, ``--auto-scale-lr``, and what ``--resume`` takes from a
checkpoint.

The end-to-end cases train the demo classifier on the session's tiny generated dataset
(``tests.helpers.tiny_cls_config``) or resume the session's one run (``trained_cls``).
"""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import torch

from cvt_backbone import ConfigError, read_checkpoint
from tests.helpers import ENV, ROOT, tiny_cls_config, train
from work_dir import LOCK_FILE, WorkDirLock

#: A process that holds a work dir, as a training run does, until it is killed.
HOLDER = ('import sys, time\n'
          'from work_dir import WorkDirLock\n'
          'WorkDirLock(sys.argv[1])\n'
          'print("held", flush=True)\n'
          'time.sleep(600)\n')


def assert_one_error_line(result: subprocess.CompletedProcess, pattern: str) -> None:
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-3000:]
    assert 'Traceback' not in result.stderr, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert re.fullmatch(pattern, last), last


# ----------------------------------------------------------------------------- the lock
def test_a_held_work_dir_is_refused_naming_the_process_that_holds_it(tmp_path):
    work_dir = str(tmp_path / 'work')
    first = WorkDirLock(work_dir)  # creates the folder
    assert (tmp_path / 'work' / LOCK_FILE).read_text() == str(os.getpid())
    with pytest.raises(ConfigError, match=rf"work dir '{re.escape(work_dir)}' is in use by a "
                                          rf'live training run \(process {os.getpid()}\): '
                                          rf'wait for it, stop it, or pass another --work-dir'):
        WorkDirLock(work_dir)
    first.release()
    WorkDirLock(work_dir).release()  # free again


@pytest.mark.slow
def test_a_killed_runs_work_dir_is_free_at_once(tmp_path):
    with subprocess.Popen([sys.executable, '-c', HOLDER, str(tmp_path)], cwd=ROOT, env=ENV,
                          stdout=subprocess.PIPE, text=True) as holder:
        try:
            assert holder.stdout.readline().strip() == 'held'
            with pytest.raises(ConfigError, match=rf'\(process {holder.pid}\)'):
                WorkDirLock(str(tmp_path))
        finally:
            holder.kill()
    WorkDirLock(str(tmp_path)).release()


@pytest.mark.slow
def test_a_second_run_into_a_held_work_dir_is_refused(shapes_cls, tmp_path):
    config = tiny_cls_config(tmp_path / 'cfg.py', shapes_cls, max_epochs=1)
    work_dir = tmp_path / 'work'
    with subprocess.Popen([sys.executable, '-c', HOLDER, str(work_dir)], cwd=ROOT, env=ENV,
                          stdout=subprocess.PIPE, text=True) as holder:
        try:
            assert holder.stdout.readline().strip() == 'held'
            result = train(config, work_dir, check=False)
        finally:
            holder.kill()
    assert_one_error_line(result, rf"error: work dir '{re.escape(str(work_dir))}' is in use by "
                                  rf'a live training run \(process {holder.pid}\): wait for it, '
                                  rf'stop it, or pass another --work-dir')
    assert sorted(p.name for p in work_dir.iterdir()) == [LOCK_FILE]  # nothing trained


# ----------------------------------------------------------------------------- --auto-scale-lr
def _initial_lrs(checkpoint) -> list[float]:
    return [group['initial_lr'] for group in
            read_checkpoint(str(checkpoint))['optimizer']['param_groups']]


@pytest.mark.slow
def test_auto_scale_lr_scales_by_the_total_batch(trained_cls, tmp_path):
    """The session's run (batch 8 on one process, no --auto-scale-lr) against the same run
    with ``auto_scale_lr.base_batch_size=16`` and ``--auto-scale-lr``: every learning rate
    is halved."""
    config = tiny_cls_config(tmp_path / 'cfg.py', trained_cls['data'], max_epochs=2,
                             extra='auto_scale_lr = dict(base_batch_size=16)\n')
    train(config, tmp_path / 'work', '--auto-scale-lr', '--cfg-options',
          'train_cfg.max_epochs=1')
    scaled = _initial_lrs(tmp_path / 'work' / 'epoch_1.pth')
    written = _initial_lrs(trained_cls['work_dir'] / 'epoch_1.pth')
    assert len(scaled) == len(written) > 0
    assert scaled == pytest.approx([lr / 2 for lr in written])


@pytest.mark.slow
def test_auto_scale_lr_without_a_base_batch_size_is_one_error_line(shapes_cls, tmp_path):
    config = tiny_cls_config(tmp_path / 'cfg.py', shapes_cls, max_epochs=1)
    result = train(config, tmp_path / 'work', '--auto-scale-lr', check=False)
    assert_one_error_line(result, rf'error: --auto-scale-lr: {re.escape(str(config))} has no '
                                  r'auto_scale_lr\.base_batch_size, the total batch its '
                                  r'learning rate is for')


# ----------------------------------------------------------------------------- --resume
@pytest.fixture
def edited_checkpoint(trained_cls, tmp_path):
    """The session run's ``epoch_1.pth`` with ``meta`` entries changed, written anew."""
    def edit(**meta) -> str:
        # our own file: loading it in full runs nothing foreign
        checkpoint = torch.load(trained_cls['work_dir'] / 'epoch_1.pth', weights_only=False)
        checkpoint['meta'].update(meta)
        path = tmp_path / 'edited.pth'
        torch.save(checkpoint, path)
        return str(path)
    return edit


@pytest.mark.slow
def test_a_resumed_seed_numpy_cannot_take_is_not_taken(trained_cls, edited_checkpoint, tmp_path):
    """A run with no seed of its own takes the checkpoint's, unless it is no seed: the run
    goes on (MMEngine would stop on NumPy's ``Seed must be between 0 and 2**32 - 1``)."""
    checkpoint = edited_checkpoint(seed=2 ** 40)
    # the session's run is 2 epochs shortened to 1: resumed as 3 shortened to 2, the fitted
    # schedule has the checkpoint's shape (the one-iteration warm-up is left out of both)
    config = tiny_cls_config(tmp_path / 'cfg.py', trained_cls['data'], max_epochs=3)
    result = train(config, tmp_path / 'work', '--resume', checkpoint, '--cfg-options',
                   'randomness.seed=None', 'train_cfg.max_epochs=2', check=False)
    assert result.returncode == 0 and 'Traceback' not in result.stderr, result.stderr[-3000:]
    assert (tmp_path / 'work' / 'epoch_2.pth').is_file()
    assert 'seed: 1099511627776' not in result.stdout


@pytest.mark.slow
def test_a_resumed_checkpoints_malformed_dataset_meta_is_one_error_line(trained_cls,
                                                                        edited_checkpoint,
                                                                        tmp_path):
    checkpoint = edited_checkpoint(dataset_meta=['circle', 'square', 'triangle'])
    result = train(trained_cls['config'], tmp_path / 'work', '--resume', checkpoint,
                   check=False)
    assert_one_error_line(result, rf"error: Cannot resume from checkpoint "
                                  rf"'{re.escape(checkpoint)}': its meta\.dataset_meta is a "
                                  r'list, not a mapping')
    assert not (tmp_path / 'work' / 'epoch_2.pth').exists()
