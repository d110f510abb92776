"""The README's main command on shortened schedules: every model learns.

``tools/demo/run_demo.py --quick`` generates the shapes data, pretrains the small CvT as a
classifier, trains Mask R-CNN from its backbone and UperNet from the detector's, and tests
all three with the project's own tools (6 minutes on 2 CPU cores). The assertions are
about learning: each loss falls, and each metric is far above what an untrained model
scores: chance top-1 is 33.3 % (the quick run measured 75.8 %), an untrained detector scores
mAP 0 (measured 0.36 bbox, 0.39 segm), a segmentor that paints everything background scores
mIoU 21.2 here (measured 43.4).
"""
import json
import subprocess
import sys

import pytest

from demo_helpers import read_losses
from tests.helpers import ENV, ROOT

pytestmark = pytest.mark.slow  # tool subprocesses, end to end


@pytest.fixture(scope='module')
def quick_demo(tmp_path_factory):
    """Run the quick demo once (seed 1) into a temporary folder; return that folder."""
    out = tmp_path_factory.mktemp('demo')
    proc = subprocess.run(
        [sys.executable, 'tools/demo/run_demo.py', '--quick', '--seed', '1', '--work-dir',
         str(out / 'work'), '--data-dir', str(out / 'data')],
        cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=3600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    (out / 'stdout.txt').write_text(proc.stdout)
    return out


def test_the_seed_reaches_every_training_and_test_run(quick_demo):
    commands = [line for line in (quick_demo / 'stdout.txt').read_text().splitlines()
                if line.lstrip().startswith('$ ') and 'tools/' in line]
    runs = [c for c in commands if 'tools/train.py' in c or 'tools/test.py' in c]
    assert len(runs) == 6 and all('randomness.seed=1' in c for c in runs), commands


def test_data_not_written_by_the_generator_is_never_removed(tmp_path):
    foreign = tmp_path / 'data' / 'shapes_cls'
    foreign.mkdir(parents=True)
    (foreign / 'mine.txt').write_text('not generated')
    proc = subprocess.run(
        [sys.executable, 'tools/demo/run_demo.py', '--quick', '--work-dir',
         str(tmp_path / 'work'), '--data-dir', str(tmp_path / 'data')],
        cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0 and 'Traceback' not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(f'error: {foreign} exists')
    assert (foreign / 'mine.txt').read_text() == 'not generated'
    assert not (tmp_path / 'data' / 'shapes').exists()


def _mean(values):
    return sum(values) / len(values)


def _loss_falls(work_dir, by: float) -> None:
    losses = [value for _, value in read_losses(str(work_dir))['loss']]
    assert len(losses) >= 6, losses
    first, last = _mean(losses[:3]), _mean(losses[-3:])
    assert last < first * by, (first, last)


def _summary(out) -> dict:
    with open(out / 'work' / 'summary.json') as f:
        return json.load(f)


def test_quick_demo_writes_every_artefact(quick_demo):
    work = quick_demo / 'work'
    for name in ('cls', 'mask_rcnn', 'upernet'):
        assert (work / name / 'loss_curve.png').stat().st_size > 0
        assert (work / name / 'test_metrics.json').is_file()
    assert (work / 'cls_backbone.pth').is_file()
    assert (work / 'mask_rcnn_backbone.pth').is_file()
    summary = (work / 'summary.md').read_text()
    assert summary.count('|') > 10
    assert (work / 'predictions.png').stat().st_size > 0
    assert str(work / 'predictions.png') in summary
    assert all(str(work / name / 'loss_curve.png') in summary
               for name in ('cls', 'mask_rcnn', 'upernet'))
    # --show-dir: every val image drawn, for each toolbox, into <work dir>/vis
    data = quick_demo / 'data'
    val = {'cls': list((data / 'shapes_cls' / 'val').rglob('*.png')),
           'mask_rcnn': list((data / 'shapes' / 'images' / 'val').glob('*.png'))}
    val['upernet'] = val['mask_rcnn']
    for name, images in val.items():
        assert len(list((work / name / 'vis').rglob('*.png'))) == len(images) > 0, name
    # metrics rounded to what they mean, no float32 noise
    for metrics in _summary(quick_demo).values():
        assert all(v == round(v, 4) for v in metrics.values() if isinstance(v, float))


def test_quick_demo_classifier_learns(quick_demo):
    _loss_falls(quick_demo / 'work' / 'cls', by=0.95)
    assert _summary(quick_demo)['classification']['accuracy/top1'] > 40.0


def test_quick_demo_detector_learns(quick_demo):
    _loss_falls(quick_demo / 'work' / 'mask_rcnn', by=0.7)
    metrics = _summary(quick_demo)['detection']
    assert metrics['coco/bbox_mAP'] > 0.15, metrics
    assert metrics['coco/segm_mAP'] > 0.15, metrics


def test_quick_demo_segmentor_learns(quick_demo):
    _loss_falls(quick_demo / 'work' / 'upernet', by=0.7)
    metrics = _summary(quick_demo)['segmentation']
    assert metrics['mIoU'] > 28.0, metrics
