"""The end-to-end demo on generated data (``make demo`` runs it).

1. generate the shapes datasets (classification images, and scenes with COCO instance
   annotations and semantic label maps) unless they exist as this version generates them;
2. pretrain the small CvT as a classifier with mmpretrain, evaluate top-1, and convert the
   classifier checkpoint into backbone weights;
3. train Mask R-CNN from them with mmdet, evaluate COCO bbox/segm mAP, draw predictions,
   and take its backbone weights;
4. train UperNet from the detector's backbone with mmseg, evaluate mIoU, draw predictions;
5. draw one picture of the val predictions of all three models (with the classifier's
   class-token attention), from the saved checkpoints;
6. plot the loss curves and print (and write) a summary table naming every picture.

Every step runs the project's own tools (``tools/train.py``, ``tools/test.py``) on the demo
configs in ``configs/demo/``, exactly as a user would, while one line per run shows its
progress as the tool logs it (iteration of the total, epoch, loss, time left). Outputs go
to ``work_dirs/demo/``.

    python tools/demo/run_demo.py [--seed 0] [--work-dir work_dirs/demo] [--data-dir data] [--quick]

``--seed`` seeds every training and test run (``randomness.seed``); the generated data is the
same for every seed. Runs of another seed than 0 go to ``work_dirs/demo-seed<N>`` unless
``--work-dir`` names a folder.

``--quick`` runs every step on shortened schedules that still learn (the tests run it and
assert that losses fall and the metrics are well above chance).
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import os.path as osp
import shutil
import subprocess
import sys
import time

from cvt_backbone.errors import run_main
from cvt_backbone.training import use_safe_loading
from demo_helpers import extract_backbone, latest_checkpoint, plot_losses, read_losses
from demo_picture import DemoModels, draw_demo_picture
from demo_progress import StepProgress, follow
from demo_shapes import SETTINGS_FILE, is_current, make_classification_set, make_scene_set

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
# (make_demo_data.py --only, folder under --data-dir, generator) of the two datasets.
DATASETS = (('cls', 'shapes_cls', make_classification_set), ('scenes', 'shapes', make_scene_set))
# (name, config, work sub-dir, the step whose backbone it starts from). Each model starts
# from the backbone of the one before: the segmentor from the detector's, whose backbone has
# learnt to find and tell apart the shapes in scenes (mIoU 62.0 vs 54.3 from the classifier's
# after 500 iterations).
STEPS = (
    ('classification', 'configs/demo/cvt-tiny_shapes-cls.py', 'cls', None),
    ('detection', 'configs/demo/mask-rcnn_cvt-tiny_fpn_shapes.py', 'mask_rcnn', 'classification'),
    ('segmentation', 'configs/demo/upernet_cvt-tiny_shapes.py', 'upernet', 'detection'),
)
# What the summary reports of each step's test metrics.
REPORTED = {
    'classification': ('accuracy/top1',),
    'detection': ('coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/segm_mAP', 'coco/segm_mAP_50'),
    'segmentation': ('mIoU', 'aAcc'),
}
# Shortened schedules for --quick: every step still learns (the tests assert it).
QUICK = {
    'classification': ['train_cfg.max_epochs=2', 'train_cfg.val_interval=2'],
    'detection': ['train_cfg.max_epochs=3', 'train_cfg.val_interval=3'],
    'segmentation': ['train_cfg.max_iters=150', 'train_cfg.val_interval=150'],
}


def data_options(name: str, data_dir: str) -> list[str]:
    """``--cfg-options`` that point a demo config at datasets under ``data_dir``."""
    root = osp.join(data_dir, 'shapes_cls' if name == 'classification' else 'shapes')
    # the training dataset is wrapped in SeededDataset (configs/_base_/cvt_runtime.py)
    options = [f'train_dataloader.dataset.dataset.data_root={root}'] + [
        f'{split}_dataloader.dataset.data_root={root}' for split in ('val', 'test')]
    if name == 'detection':
        ann_file = osp.join(root, 'annotations', 'instances_val.json')
        options += [f'val_evaluator.ann_file={ann_file}', f'test_evaluator.ann_file={ann_file}']
    return options


def train_epochs(config: str, options: list[str]) -> int | None:
    """``train_cfg.max_epochs`` of ``config`` with ``options``; None for iteration loops."""
    from mmengine.config import Config, DictAction

    cfg = Config.fromfile(config)
    cfg.merge_from_dict({key: DictAction._parse_iterable(value)
                         for key, value in (option.split('=', 1) for option in options)})
    loop = cfg.get('train_cfg') or {}
    return None if 'max_iters' in loop else loop.get('max_epochs')


def run(cmd: list[str], log_file: str, label: str | None = None,
        max_epochs: int | None = None) -> None:
    """Run a tool, its output going to ``log_file``; with a ``label``, one progress line
    follows that file (:class:`demo_progress.StepProgress`)."""
    print(f'  $ {" ".join(cmd)}', flush=True)
    progress = StepProgress(label, max_epochs) if label else None
    with open(log_file, 'w') as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        try:
            returncode = follow(proc, log_file, progress.update) if progress else proc.wait()
        finally:
            if progress:
                progress.close()
    if returncode != 0:
        with open(log_file) as log:
            tail = ''.join(log.readlines()[-25:])
        sys.exit(f'error: step failed (exit {returncode}); last lines of {log_file}:\n{tail}')


def train_and_test(name: str, config: str, work_dir: str, options: list[str]
                   ) -> tuple[dict, str]:
    """Train a demo config, test its final checkpoint with visualisations, plot its losses."""
    py = sys.executable
    cfg_opts = ['--cfg-options', *options] if options else []
    start = time.time()
    run([py, 'tools/train.py', config, '--work-dir', work_dir, *cfg_opts],
        osp.join(work_dir + '.train.log'), f'  {name}: train', train_epochs(config, options))
    checkpoint = latest_checkpoint(work_dir)
    train_time = time.time() - start
    metrics_file = osp.join(work_dir, 'test_metrics.json')
    run([py, 'tools/test.py', config, checkpoint, '--work-dir', work_dir, '--show-dir', 'vis',
         '--metrics-out', metrics_file, *cfg_opts], osp.join(work_dir + '.test.log'),
        f'  {name}: test')
    with open(metrics_file) as f:
        metrics = json.load(f)
    curve = osp.join(work_dir, 'loss_curve.png')
    plot_losses(read_losses(work_dir), curve, title=f'{name}: {osp.basename(config)}')
    metrics['train_seconds'] = round(train_time, 1)
    print(f'  {name}: trained in {train_time / 60:.1f} min; ' + ', '.join(
        f'{k} {metrics[k]:.3f}' for k in REPORTED[name] if k in metrics), flush=True)
    return metrics, checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--seed', type=int, default=0,
                        help='random seed of every training and test run (default 0)')
    parser.add_argument('--work-dir',
                        help='output folder (default work_dirs/demo, or work_dirs/demo-seed<N>)')
    parser.add_argument('--data-dir', default='data',
                        help='where the generated datasets are (made there when missing)')
    parser.add_argument('--quick', action='store_true',
                        help='shortened schedules (minutes; not the reported figures)')
    args = parser.parse_args()
    if args.work_dir is None:
        args.work_dir = 'work_dirs/demo' + (f'-seed{args.seed}' if args.seed else '')
    os.chdir(ROOT)
    os.makedirs(args.work_dir, exist_ok=True)
    begin = time.time()

    data_dir = args.data_dir
    stale = [(option, folder) for option, folder, maker in DATASETS
             if not is_current(osp.join(data_dir, folder), maker)]
    for option, folder in stale:
        root = osp.join(data_dir, folder)
        if osp.exists(osp.join(root, SETTINGS_FILE)):  # the generator's, other settings
            print(f'[1/6] {root} was generated with other settings: generating it anew',
                  flush=True)
            shutil.rmtree(root)
        elif osp.exists(root):
            sys.exit(f'error: {root} exists but was not written by this version of '
                     f'tools/demo/make_demo_data.py (it has no {SETTINGS_FILE}): remove it, '
                     f'or pass another --data-dir')
        else:
            print(f'[1/6] generating {root}', flush=True)
        run([sys.executable, 'tools/demo/make_demo_data.py', '--out', data_dir, '--only',
             option], osp.join(args.work_dir, f'make_data_{option}.log'))
    if not stale:
        print(f'[1/6] shapes datasets found in {data_dir}/', flush=True)

    results, backbones, checkpoints = {}, {}, {}
    for number, (name, config, sub, init_from) in enumerate(STEPS, start=2):
        print(f'[{number}/6] {name}: {config}', flush=True)
        options = data_options(name, data_dir) + [f'randomness.seed={args.seed}']
        if args.quick:
            options += QUICK[name]
        if init_from is not None:
            options.append(f'model.backbone.init_cfg.checkpoint={backbones[init_from]}')
        results[name], checkpoint = train_and_test(
            name, config, osp.join(args.work_dir, sub), options)
        checkpoints[name] = checkpoint
        if any(init_from == name for *_, init_from in STEPS):
            backbones[name] = osp.join(args.work_dir, f'{sub}_backbone.pth')
            extract_backbone(checkpoint, backbones[name])
            print(f'  backbone weights for the next step: {backbones[name]}', flush=True)

    picture = osp.join(args.work_dir, 'predictions.png')
    print(f'[5/6] drawing the val predictions of the three models into {picture}', flush=True)
    configs = {name: config for name, config, *_ in STEPS}
    use_safe_loading()  # the inferencers read the checkpoints through the package's decoder
    draw_demo_picture(DemoModels(
        configs['classification'], checkpoints['classification'], configs['detection'],
        checkpoints['detection'], configs['segmentation'], checkpoints['segmentation']),
        data_dir, picture)

    total = time.time() - begin
    curves = sorted(glob.glob(osp.join(args.work_dir, '*', 'loss_curve.png')))
    lines = ['| step | config | train time | metrics |', '|---|---|---|---|']
    for name, config, *_ in STEPS:
        metrics = results[name]
        shown = ', '.join(f'{k} {metrics[k]:.3f}' for k in REPORTED[name] if k in metrics)
        lines.append(f'| {name} | `{config}` | {metrics["train_seconds"] / 60:.1f} min | '
                     f'{shown} |')
    lines.append(f'\nWhole demo: {total / 60:.1f} min.\n\nPictures:\n\n'
                 f'- val predictions of all three models: {picture}\n'
                 + ''.join(f'- loss curve: {curve}\n' for curve in curves)
                 + f'- every test image drawn by tools/test.py: {args.work_dir}/*/vis/')
    summary = '\n'.join(lines)
    with open(osp.join(args.work_dir, 'summary.md'), 'w') as f:
        f.write(summary + '\n')
    with open(osp.join(args.work_dir, 'summary.json'), 'w') as f:
        json.dump(results, f, indent=2)
    print('\n[6/6] summary\n' + summary, flush=True)


if __name__ == '__main__':
    run_main(main)
