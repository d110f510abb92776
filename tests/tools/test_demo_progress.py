"""The demo as a person watches it: live progress read from the tools' logs, and the picture.

The progress line must say what MMEngine logged: the parsed iterations and losses of a real
training run equal those in its ``scalars.json``. The picture is drawn from checkpoints
through the toolboxes' inferencers, large enough to read.
"""
from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from cvt_backbone.apis import build_model
from cvt_backbone.checkpoint.write import atomic_save
from demo_helpers import read_losses
from demo_picture import DPI, PANEL_INCHES, DemoModels, draw_demo_picture
from demo_progress import StepProgress, follow, parse_log_line
from demo_shapes import CLASSES, make_classification_set, make_scene_set
from tests.helpers import ROOT


@pytest.fixture(scope='module')
def training_log(trained_cls) -> tuple[Path, list[str]]:
    """The session's tiny classifier run: 1 epoch of 2 iterations, every one logged."""
    # <timestamp>/<timestamp>.log: the training run's comes before the test run's
    log = min(trained_cls['work_dir'].glob('*/*.log'))
    return trained_cls['work_dir'], log.read_text().splitlines()


@pytest.mark.slow
def test_progress_lines_say_what_mmengine_logged(training_log):
    work_dir, lines = training_log
    parsed = [p for p in map(parse_log_line, lines) if p and p.mode == 'train']
    assert [(p.epoch, p.step, p.steps) for p in parsed] == [(1, 1, 2), (1, 2, 2)]
    logged = read_losses(str(work_dir))['loss']
    assert [(p.epoch - 1) * p.steps + p.step for p in parsed] == [step for step, _ in logged]
    for p, (_, loss) in zip(parsed, logged):
        assert p.loss == pytest.approx(loss, abs=1e-4)   # the log rounds to 4 decimals
        assert p.eta is not None


@pytest.mark.slow
def test_the_bar_ends_at_the_total_with_epoch_and_loss(training_log):
    _, lines = training_log
    out = io.StringIO()
    progress = StepProgress('cls: train', max_epochs=1, file=out)
    for line in lines:
        if parse_log_line(line) and 'Epoch(train)' in line:
            progress.update(line)
    assert (progress.bar.n, progress.bar.total) == (2, 2)
    last = out.getvalue().split('\r')[-1]
    assert '2/2' in last and 'epoch 1/1' in last and 'loss ' in last and ' left' in last
    progress.close()


@pytest.mark.parametrize('line, expected', [
    ('12/01 22:01:22 - mmengine - INFO - Iter(train) [  20/1000]  base_lr: 3.9388e-04 lr: '
     '3.9388e-04  eta: 0:04:45  time: 0.2859  data_time: 0.0063  loss: 1.7884  '
     'decode.loss_ce: 1.2454  decode.acc_seg: 74.2989  aux.loss_ce: 0.5431',
     ('train', None, 20, 1000, 1.7884, '0:04:45')),
    ('12/01 21:55:04 - mmengine - INFO - Epoch(val) [4][10/10]    eta: 0:00:00  time: 0.0795',
     ('val', 4, 10, 10, None, '0:00:00')),
    ('12/01 21:56:23 - mmengine - INFO - Epoch(test) [ 3/13]    eta: 0:00:07  time: 0.7862',
     ('test', None, 3, 13, None, '0:00:07')),
    ('12/01 21:53:58 - mmengine - INFO - Checkpoints will be saved to /x.', None),
])
def test_parse_log_line_reads_every_loop_kind(line, expected):
    parsed = parse_log_line(line)
    if expected is None:
        assert parsed is None
    else:
        assert (parsed.mode, parsed.epoch, parsed.step, parsed.steps, parsed.loss,
                parsed.eta) == expected


@pytest.mark.slow
def test_follow_waits_for_the_end_of_a_line(tmp_path):
    log_file = tmp_path / 'run.log'
    writer = ("import sys, time\n"
              "sys.stdout.write('first li'); sys.stdout.flush(); time.sleep(1.0)\n"
              "sys.stdout.write('ne\\nsecond'); sys.stdout.flush(); time.sleep(0.5)\n"
              "sys.stdout.write(' line'); sys.exit(3)\n")
    seen = []
    with open(log_file, 'w') as log:
        proc = subprocess.Popen([sys.executable, '-c', writer], stdout=log)
        assert follow(proc, str(log_file), seen.append, poll=0.05) == 3
    assert seen == ['first line', 'second line']


@pytest.mark.slow  # the three demo models end to end
def test_demo_picture_is_drawn_large_from_checkpoints(tmp_path):
    make_classification_set(str(tmp_path / 'data' / 'shapes_cls'), num_train=0, num_val=6)
    make_scene_set(str(tmp_path / 'data' / 'shapes'), num_train=0, num_val=5)
    paths = {}
    for name, config in (('cls', 'cvt-tiny_shapes-cls.py'),
                         ('det', 'mask-rcnn_cvt-tiny_fpn_shapes.py'),
                         ('seg', 'upernet_cvt-tiny_shapes.py')):
        paths[name] = str(ROOT / 'configs' / 'demo' / config)
        model, _ = build_model(paths[name])
        meta = {'dataset_meta': {'classes': CLASSES}} if name == 'cls' else {}
        atomic_save({'state_dict': model.state_dict(), 'meta': meta}, tmp_path / f'{name}.pth')
    models = DemoModels(paths['cls'], str(tmp_path / 'cls.pth'), paths['det'],
                        str(tmp_path / 'det.pth'), paths['seg'], str(tmp_path / 'seg.pth'))
    out = draw_demo_picture(models, str(tmp_path / 'data'), str(tmp_path / 'picture.png'))
    width, height = Image.open(out).size
    # one classification row per class in the val set, then detection and segmentation
    rows = len(list((tmp_path / 'data' / 'shapes_cls' / 'val').iterdir())) + 2
    panel = PANEL_INCHES * DPI
    assert width == round(5 * panel) and height >= round(rows * panel)
    assert panel >= 2 * 128   # a 128x128 scene at twice its size, or more


def test_a_dataset_is_current_only_as_the_generator_makes_it_by_default(tmp_path):
    from demo_shapes import SETTINGS_FILE, is_current

    assert not is_current(str(tmp_path / 'missing'), make_scene_set)
    make_scene_set(str(tmp_path / 'small'), num_train=2, num_val=1)
    assert not is_current(str(tmp_path / 'small'), make_scene_set)
    make_scene_set(str(tmp_path / 'default'))
    assert is_current(str(tmp_path / 'default'), make_scene_set)
    assert not is_current(str(tmp_path / 'default'), make_classification_set)
    (tmp_path / 'default' / SETTINGS_FILE).write_text('{not json')
    assert not is_current(str(tmp_path / 'default'), make_scene_set)

