"""The demo classification job learns: loss falls, top-1 beats chance (1/3) by a wide margin."""
import json
import os.path as osp
import subprocess
import sys

from cvt_backbone.datasets import make_classification_set
from cvt_backbone.demo import read_losses

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def test_demo_classifier_learns_on_a_shortened_schedule(tmp_path):
    data = tmp_path / 'shapes_cls'
    make_classification_set(str(data), num_train=6000, num_val=300, seed=0)
    work_dir = tmp_path / 'work'
    metrics = tmp_path / 'metrics.json'
    options = [f'train_dataloader.dataset.data_root={data}',
               f'val_dataloader.dataset.data_root={data}',
               f'test_dataloader.dataset.data_root={data}',
               'train_cfg.max_epochs=4', 'train_cfg.val_interval=4']
    train = subprocess.run(
        [sys.executable, 'tools/train.py', 'configs/demo/cvt-tiny_shapes-cls.py',
         '--work-dir', str(work_dir), '--cfg-options', *options],
        cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert train.returncode == 0, train.stderr[-3000:]
    with open(work_dir / 'last_checkpoint') as f:
        checkpoint = f.read().strip()
    test = subprocess.run(
        [sys.executable, 'tools/test.py', 'configs/demo/cvt-tiny_shapes-cls.py', checkpoint,
         '--work-dir', str(work_dir), '--metrics-out', str(metrics), '--cfg-options', *options],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert test.returncode == 0, test.stderr[-3000:]
    losses = [value for _, value in read_losses(str(work_dir))['loss']]
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < first - 0.2, (first, last)
    top1 = json.load(open(metrics))['accuracy/top1']
    assert top1 >= 50.0, top1
