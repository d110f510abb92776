"""Atomic writes, and MMEngine's writes through them where the atomic backend is named
(``backend_args=dict(backend='atomic_local')``, which SafeCheckpointHook uses)."""
import os
import stat
import subprocess
import sys
import textwrap

import pytest
import torch
from mmengine.fileio import get_file_backend
from mmengine.runner import save_checkpoint

from cvt_backbone import read_checkpoint
from cvt_backbone.checkpoint.write import TMP_SUFFIX
from cvt_backbone.training.hooks import ATOMIC_BACKEND, AtomicLocalBackend
from tests.helpers import ROOT


def test_mmengine_writes_through_the_atomic_backend_where_it_is_named(tmp_path):
    assert type(get_file_backend(str(tmp_path / 'a.pth'))) is not AtomicLocalBackend  # MMEngine's
    named = dict(backend=ATOMIC_BACKEND)
    assert isinstance(get_file_backend(backend_args=named), AtomicLocalBackend)
    target = tmp_path / 'new' / 'epoch_1.pth'
    save_checkpoint({'state_dict': {'w': torch.arange(4.)}}, str(target), backend_args=named)
    assert torch.equal(read_checkpoint(target)['state_dict']['w'], torch.arange(4.))
    assert os.listdir(target.parent) == ['epoch_1.pth']


def test_put_replaces_the_file_with_the_permissions_of_a_plain_write(tmp_path):
    backend = AtomicLocalBackend()
    plain, atomic = tmp_path / 'plain.txt', tmp_path / 'atomic.txt'
    plain.write_bytes(b'x')
    backend.put(b'old', atomic)
    backend.put_text('new \u00e9', atomic)
    assert atomic.read_text(encoding='utf-8') == 'new \u00e9'
    assert stat.S_IMODE(atomic.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)
    assert sorted(os.listdir(tmp_path)) == ['atomic.txt', 'plain.txt']


def test_a_failed_write_keeps_the_old_file_and_cleans_up(tmp_path, monkeypatch):
    target = tmp_path / 'epoch_1.pth'
    target.write_bytes(b'old checkpoint')

    def disk_full(fd):
        raise OSError(28, 'No space left on device')

    monkeypatch.setattr(os, 'fsync', disk_full)
    with pytest.raises(OSError, match='No space left'):
        AtomicLocalBackend().put(b'new checkpoint' * 1000, target)
    assert target.read_bytes() == b'old checkpoint'
    assert os.listdir(tmp_path) == ['epoch_1.pth']


@pytest.mark.slow
def test_a_process_killed_mid_write_leaves_the_old_checkpoint_whole(tmp_path):
    """SIGKILL after the new bytes are written but before the rename: nothing can clean up,
    yet the checkpoint under the real name is the complete old one."""
    target = tmp_path / 'epoch_1.pth'
    save_checkpoint({'state_dict': {'w': torch.zeros(3)}}, str(target))
    script = textwrap.dedent(f"""
        import os, signal, torch
        import cvt_backbone.training
        from mmengine.runner import save_checkpoint
        os.fsync = lambda fd: os.kill(os.getpid(), signal.SIGKILL)
        save_checkpoint({{'state_dict': {{'w': torch.ones(100000)}}}}, {str(target)!r},
                        backend_args=dict(backend='atomic_local'))
    """)
    result = subprocess.run([sys.executable, '-c', script], cwd=ROOT, capture_output=True,
                            timeout=300)
    assert result.returncode == -9, result.stderr.decode()[-2000:]
    assert torch.equal(read_checkpoint(target)['state_dict']['w'], torch.zeros(3))
    leftovers = [name for name in os.listdir(tmp_path) if name != 'epoch_1.pth']
    assert len(leftovers) == 1 and leftovers[0].startswith('.epoch_1.pth.')
    assert leftovers[0].endswith(TMP_SUFFIX)
