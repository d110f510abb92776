"""tools/work_dir.py: a folder the tools write into carries no write to a file elsewhere.

A work dir handed over for ``--resume`` or testing may hold links at the names the tools and
MMEngine write by (the config's copy, ``.train.lock``, checkpoints, drawings); every such
folder is refused before anything is written, and the lock never follows a link.
"""
from __future__ import annotations

import os
import re

import pytest

from cvt_backbone import ConfigError
from tests.helpers import run_tool, tiny_cls_config, train
from work_dir import LOCK_FILE, WorkDirLock, check_output_dir


@pytest.fixture
def victim(tmp_path):
    path = tmp_path / 'victim.txt'
    path.write_text('precious\n')
    return path


@pytest.mark.parametrize('name', ['cfg.py', 'epoch_1.pth', 'deep/vis/0.png', 'linked_folder'])
def test_a_symbolic_link_at_any_depth_is_refused(tmp_path, victim, name):
    work_dir = tmp_path / 'work'
    (work_dir / name).parent.mkdir(parents=True)
    (work_dir / name).symlink_to(victim)
    with pytest.raises(ConfigError, match=rf"work dir '{re.escape(str(work_dir))}' holds "
                                          rf"'{re.escape(name)}', a symbolic link to "
                                          rf"'{re.escape(str(victim))}'"):
        check_output_dir(str(work_dir), 'work dir')


def test_a_hard_linked_file_is_refused(tmp_path, victim):
    work_dir = tmp_path / 'work'
    work_dir.mkdir()
    os.link(victim, work_dir / 'last_checkpoint')
    with pytest.raises(ConfigError, match="holds 'last_checkpoint', a file with 1 other hard"):
        check_output_dir(str(work_dir), '--show-dir')


def test_a_pipe_is_refused(tmp_path):
    work_dir = tmp_path / 'work'
    (work_dir / 'vis').mkdir(parents=True)
    os.mkfifo(work_dir / 'vis' / 'cfg.py')
    with pytest.raises(ConfigError, match=r"holds 'vis/cfg\.py', neither a file nor a folder "
                                          r'\(a pipe, socket or device\)'):
        check_output_dir(str(work_dir), 'work dir')


def test_plain_folders_and_a_linked_work_dir_itself_are_fine(tmp_path):
    real = tmp_path / 'real'
    (real / 'sub').mkdir(parents=True)
    (real / 'sub' / 'epoch_1.pth').write_bytes(b'x')
    (tmp_path / 'alias').symlink_to(real, target_is_directory=True)
    check_output_dir(str(tmp_path / 'alias'), 'work dir')
    check_output_dir(str(tmp_path / 'missing'), 'work dir')


def test_the_lock_never_follows_a_link(tmp_path, victim):
    (tmp_path / LOCK_FILE).symlink_to(victim)
    with pytest.raises(OSError):
        WorkDirLock(str(tmp_path))
    assert victim.read_text() == 'precious\n'


@pytest.mark.slow
@pytest.mark.parametrize('tool', ['train.py', 'test.py'])
def test_the_tools_refuse_a_planted_link_before_writing(shapes_cls, tmp_path, victim, tool):
    config = tiny_cls_config(tmp_path / 'cfg.py', shapes_cls, max_epochs=1)
    work_dir = tmp_path / 'work'
    work_dir.mkdir()
    (work_dir / 'cfg.py').symlink_to(victim)  # MMEngine copies the config to this name
    if tool == 'train.py':
        result = train(config, work_dir, '--resume', check=False)
    else:
        result = run_tool('test.py', config, victim, '--work-dir', work_dir)
    assert result.returncode == 1 and 'Traceback' not in result.stderr, result.stderr[-3000:]
    assert re.fullmatch(rf"error: work dir '{re.escape(str(work_dir))}' holds 'cfg\.py', a "
                        rf"symbolic link to '{re.escape(str(victim))}': .*",
                        result.stderr.strip().splitlines()[-1])
    assert victim.read_text() == 'precious\n'
    assert sorted(p.name for p in work_dir.iterdir()) == ['cfg.py']


def test_a_last_checkpoint_larger_than_a_path_is_refused_unread(tmp_path):
    from mmengine.config import Config

    from cvt_backbone import CheckpointError
    from work_dir import resolve_resume
    marker = tmp_path / 'last_checkpoint'
    with open(marker, 'wb') as f:
        f.truncate(64 << 30)  # sparse: no disk used, 64 GiB if read
    cfg = Config(dict(work_dir=str(tmp_path)))
    with pytest.raises(CheckpointError, match=rf'{re.escape(str(marker))} holds 68719476736 '
                                              rf'bytes, not the one path MMEngine writes'):
        resolve_resume(cfg, 'auto')
