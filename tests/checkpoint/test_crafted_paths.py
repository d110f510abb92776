"""Every crafted file through every loading path, each in a subprocess with a timeout and a
memory cap: refused by name on every path, no hang, no signal, no marker, no output file.

In-process paths (``tests.checkpoint.load_worker``): ``read_checkpoint``, a CvT's
``init_cfg``, ``mmengine.runner.load_checkpoint``, the Runner's ``_load_checkpoint`` and the
converter. The tools' own commands (``train.py --resume``, ``load_from``, ``test.py`` and
``infer.py``, which loads through its toolbox's inferencer) are run on the files of the
classes that reach furthest.
"""
from __future__ import annotations

import json
import os
import re
import resource
import subprocess
import sys

import pytest

from tests.checkpoint import crafted
from tests.helpers import ENV, ROOT, run_tool

pytestmark = pytest.mark.slow

#: Address space for a worker: torch and the toolboxes, plus room for honest work, but far
#: from the gigabytes a memory bomb asks for.
MEMORY_CAP = 6 << 30
TIMEOUT = 120


def capped() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))


def special_files(folder):
    fifo = folder / 'fifo.pth'
    os.mkfifo(fifo)
    return {'fifo': (fifo, 'FIFO'), 'dev_zero': ('/dev/zero', 'lies under /dev'),
            'proc': ('/proc/self/environ', 'lies under /proc')}


@pytest.mark.parametrize('make, words', crafted.REFUSED.items(),
                         ids=[m.__name__ for m in crafted.REFUSED])
def test_every_in_process_path_refuses_by_name(tmp_path, make, words):
    path = make(tmp_path)
    result = subprocess.run([sys.executable, '-m', 'tests.checkpoint.load_worker', str(path),
                             str(tmp_path)], cwd=ROOT, env=ENV, capture_output=True, text=True,
                            timeout=TIMEOUT, preexec_fn=capped)
    assert result.returncode == 0, f'the worker died ({result.returncode}): ' \
                                   f'{result.stderr[-2000:]}'
    outcomes = [json.loads(line) for line in result.stdout.splitlines()
                if line.startswith('{')]
    assert [o['path'] for o in outcomes] == ['read_checkpoint', 'init_cfg', 'load_checkpoint',
                                             'runner', 'converter']
    for outcome in outcomes:
        assert outcome['outcome'] == 'refused', outcome
        if outcome['path'] != 'converter':  # its error line went to stderr
            assert path.name in outcome['message'] and re.search(words, outcome['message']), \
                outcome
    assert not (tmp_path / crafted.MARKER).exists()
    assert not (tmp_path / 'converted.pth').exists()


@pytest.mark.slow  # a worker subprocess
def test_special_files_are_refused_at_once(tmp_path):
    for name, (path, words) in special_files(tmp_path).items():
        result = subprocess.run([sys.executable, '-m', 'tests.checkpoint.load_worker',
                                 str(path), str(tmp_path)], cwd=ROOT, env=ENV,
                                capture_output=True, text=True, timeout=TIMEOUT,
                                preexec_fn=capped)
        outcomes = [json.loads(line) for line in result.stdout.splitlines()
                    if line.startswith('{')]
        assert len(outcomes) == 5 and all(o['outcome'] == 'refused' for o in outcomes), name
        assert all(words in o['message'] for o in outcomes if o['path'] != 'converter'), name


@pytest.fixture(scope='module')
def demo_data(tmp_path_factory):
    from demo_shapes import make_classification_set
    data = tmp_path_factory.mktemp('data') / 'shapes_cls'
    make_classification_set(str(data), num_train=4, num_val=4, size=32)
    return data


@pytest.mark.parametrize('make', [crafted.os_system, crafted.frame_summary,
                                  crafted.numpy_dtype_fields, crafted.stride_zero,
                                  crafted.malformed_history_buffer],
                         ids=lambda m: m.__name__)
@pytest.mark.parametrize('command', ['resume', 'load_from', 'test', 'infer'])
def test_the_tools_refuse_with_one_line(tmp_path, demo_data, make, command):
    config = 'configs/demo/cvt-tiny_shapes-cls.py'
    path = make(tmp_path)
    work = ['--work-dir', tmp_path / 'work']
    data = [f'train_dataloader.dataset.dataset.data_root={demo_data}',  # inside SeededDataset
            *(f'{loader}.dataset.data_root={demo_data}'
              for loader in ('val_dataloader', 'test_dataloader'))]
    args = {'resume': ('train.py', config, '--resume', path, *work, '--cfg-options', *data),
            'load_from': ('train.py', config, *work, '--cfg-options', f'load_from={path}',
                          *data),
            'test': ('test.py', config, path, *work, '--cfg-options', *data),
            'infer': ('infer.py', config, path, f'{demo_data}/val/*/*.png', '--out-dir',
                      tmp_path / 'out')}[command]
    result = run_tool(*args, timeout=TIMEOUT, preexec_fn=capped)
    assert result.returncode == 1, result.stderr[-3000:]
    assert 'Traceback' not in result.stderr, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith('error: ') and path.name in last, last
    assert not (tmp_path / crafted.MARKER).exists()
    assert not list((tmp_path / 'out').rglob('*.*'))
