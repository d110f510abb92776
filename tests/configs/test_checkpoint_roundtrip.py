"""Every shipped config trains, saves a checkpoint, tests it and resumes from it; so do the
schedulers, optimizer wrappers and hooks of the toolboxes' common recipes.

Each config runs on generated images in its own dataset's layout (``tests.configs.generated``:
COCO, ADE20K, ImageNet, the demos' and ``configs/own_dataset/``'s), at 64 pixels, with a small
CvT (and once with the whole CvT-13 Mask R-CNN), its loop shortened on the command line as a
user would: its schedule is fitted as ``tools/train.py`` fits it. ``tools/train.py`` and
``tools/test.py`` run in this process (their own ``main``), and once per toolbox as
subprocesses. For the first config of each schedule, a second run resumes from the halfway
checkpoint of the first and must end where the uninterrupted run ended, its schedulers in
the same state.
"""
from __future__ import annotations

import itertools
import json
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mmengine.config import Config

from cvt_backbone.checkpoint import read_checkpoint
from demo_shapes import make_classification_set, make_scene_set
from tests.configs.generated import small, write_coco, write_image_folders, write_segmentation
from tests.helpers import ENV, ROOT

pytestmark = pytest.mark.slow

COCO_NAMES = ('person', 'bicycle', 'car')
OWN_NAMES = ('cat', 'dog', 'fox')
CONFIGS = sorted(str(p.relative_to(ROOT)) for p in (ROOT / 'configs').rglob('*.py')
                 if '_base_' not in p.parts and 'deploy' not in p.parts)  # deploy: mmdeploy's
_runs = itertools.count()


@pytest.fixture(scope='module')
def place(tmp_path_factory) -> Path:
    """A folder holding every dataset where the configs look for it (``data/...``)."""
    root = tmp_path_factory.mktemp('roundtrip')
    coco = {'train': 'annotations/instances_train2017.json',
            'val': 'annotations/instances_val2017.json'}
    write_coco(root, 'data/coco/', COCO_NAMES, coco, {'train': 'train2017', 'val': 'val2017'})
    write_coco(root, 'data/my_coco/', OWN_NAMES,
               {'train': 'annotations/train.json', 'val': 'annotations/val.json'},
               {'train': 'train', 'val': 'val'})
    write_segmentation(root, 'data/ade/ADEChallengeData2016',
                       {'train': 'images/training', 'val': 'images/validation'},
                       {'train': 'annotations/training', 'val': 'annotations/validation'})
    write_segmentation(root, 'data/my_seg', {'train': 'images/train', 'val': 'images/val'},
                       {'train': 'annotations/train', 'val': 'annotations/val'})
    synsets = ('n01440764', 'n01443537', 'n01484850')
    write_image_folders(root, 'data/imagenet', synsets, meta=True)
    write_image_folders(root, 'data/imagenet21k', synsets, meta=True)
    write_image_folders(root, 'data/my_images', OWN_NAMES)
    make_scene_set(str(root / 'data' / 'shapes'), num_train=4, num_val=2, size=64)
    make_classification_set(str(root / 'data' / 'shapes_cls'), num_train=4, num_val=2, size=64)
    return root


def small_config(path: str, folder: Path, narrow: bool = True, extra: dict | None = None
                 ) -> Path:
    """``path`` made small (:func:`~tests.configs.generated.small`), written into ``folder``.

    An iteration-valued warm-up in an epoch-based loop (mmdet's 500 iterations) would not fit
    in a run on 4 images (``tools/train.py`` says so, see ``tests/tools/test_schedule_fitting.py``):
    here it lasts as many iterations as the loop has epochs.
    """
    cfg = small(Config.fromfile(str(ROOT / path)), narrow)
    cfg.load_from = None
    cfg.merge_from_dict(extra or {})
    loop = cfg.get('train_cfg') or {}
    if 'max_epochs' in loop:
        loop['val_interval'] = loop['max_epochs'] + 1  # tested below, not validated
        schedulers = cfg.get('param_scheduler') or []
        for scheduler in [schedulers] if isinstance(schedulers, dict) else schedulers:
            if not scheduler.get('by_epoch', True) and 'end' in scheduler:
                scheduler['end'] = min(scheduler['end'], loop['max_epochs'])
    elif 'max_iters' in loop:
        loop['val_interval'] = loop['max_iters'] + 1
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / Path(path).name
    cfg.dump(str(target))
    return target


def tool(script: str, *args: object) -> None:
    """``tools/<script> ARGS`` in this process, as its ``__main__``; an ``error:`` exit
    fails the test with its line."""
    argv = sys.argv
    sys.argv = [str(ROOT / 'tools' / script), *map(str, args)]
    try:
        runpy.run_path(sys.argv[0], run_name='__main__')
    except SystemExit as exit_:
        if exit_.code not in (None, 0):
            pytest.fail(f'{script} {" ".join(map(str, args))}: {exit_.code}')
    finally:
        sys.argv = argv


def loop_options(config: Path, times: int) -> list[str]:
    """``--cfg-options`` shortening the loop to ``times`` epochs (or 2 x ``times``
    iterations) with a checkpoint after each epoch (or two iterations), all kept, each run
    with its own experiment name (MMEngine's loggers and message hubs are per name and
    process)."""
    loop = Config.fromfile(str(config)).train_cfg
    length = (f'train_cfg.max_epochs={times}', 'default_hooks.checkpoint.interval=1') \
        if 'max_epochs' in loop else \
        (f'train_cfg.max_iters={2 * times}', 'default_hooks.checkpoint.interval=2')
    return ['--cfg-options', *length, 'default_hooks.checkpoint.max_keep_ckpts=-1',
            f'experiment_name=run{next(_runs)}']


def checkpoints(work: Path) -> list[Path]:
    """A run's checkpoints in the order of their steps (not its best-metric copies)."""
    return sorted((p for p in work.glob('*_*.pth') if not p.name.startswith('best_')),
                  key=lambda p: int(p.stem.rsplit('_', 1)[1]))


def schedule_of(path: str) -> str:
    """What a resume restores besides the weights: the loop, schedulers, optimizer wrapper
    and hooks."""
    cfg = Config.fromfile(str(ROOT / path))
    return repr([cfg.get(k) for k in ('train_cfg', 'param_scheduler', 'custom_hooks')]
                + [(cfg.get('optim_wrapper') or {}).get('type')])


FIRST_OF_SCHEDULE = {}
for _path in CONFIGS:
    FIRST_OF_SCHEDULE.setdefault(schedule_of(_path), _path)


def roundtrip(place: Path, monkeypatch, config: Path, work: Path, resume: bool,
              *train_args: str) -> dict:
    """Train ``config`` for two epochs (four iterations) with a checkpoint halfway, test
    that checkpoint, and resume a run of the same config from it in another work dir;
    return the halfway checkpoint and the last of each run."""
    monkeypatch.chdir(place)
    tool('train.py', config, '--work-dir', work, *train_args, *loop_options(config, 2))
    saved = checkpoints(work)
    assert len(saved) == 2, saved
    if Config.fromfile(str(config)).get('test_dataloader'):
        tool('test.py', config, saved[0], '--work-dir', work / 'test', '--metrics-out',
             work / 'metrics.json', '--cfg-options', f'experiment_name=run{next(_runs)}')
        # a dict of metrics (an untrained detector's COCO metric finds no boxes: empty)
        assert isinstance(json.loads((work / 'metrics.json').read_text()), dict)
    runs = dict(first=read_checkpoint(str(saved[0])), last=read_checkpoint(str(saved[1])))
    if resume:
        tool('train.py', config, '--work-dir', work / 'resumed', '--resume', saved[0],
             *train_args, *loop_options(config, 2))
        runs['resumed'] = read_checkpoint(str(checkpoints(work / 'resumed')[-1]))
    return runs


def assert_resumed(runs: dict) -> None:
    """The resumed run went on from the halfway checkpoint to where the uninterrupted run
    ended: the same iteration, the schedulers in the same state, the optimizer's state
    saved."""
    first, last, resumed = runs['first'], runs['last'], runs['resumed']
    assert resumed['meta']['iter'] == last['meta']['iter'] == 2 * first['meta']['iter'] > 0
    assert resumed['param_schedulers'] == last['param_schedulers']
    assert resumed['param_schedulers'] != first['param_schedulers']
    assert resumed['optimizer']['state'] and first['optimizer']['state']


@pytest.mark.parametrize('path', CONFIGS)
def test_every_config_trains_tests_and_resumes(place, monkeypatch, tmp_path, path):
    resume = FIRST_OF_SCHEDULE[schedule_of(path)] == path
    config = small_config(path, tmp_path / 'configs')
    runs = roundtrip(place, monkeypatch, config, tmp_path / 'work', resume)
    if resume:
        assert_resumed(runs)


def test_the_whole_cvt13_mask_rcnn_roundtrips(place, monkeypatch, tmp_path):
    config = small_config('configs/mask_rcnn/mask-rcnn_cvt-13_fpn_1x_coco.py',
                          tmp_path / 'configs', narrow=False)
    runs = roundtrip(place, monkeypatch, config, tmp_path / 'work', True)
    assert_resumed(runs)
    milestones = runs['last']['param_schedulers'][1]['milestones']
    assert type(milestones).__name__ == 'Counter'  # MMEngine's MultiStepLR, read as data


RECIPES = {
    'one-cycle': dict(param_scheduler=[dict(type='OneCycleLR', eta_max=1e-3, by_epoch=True,
                                            total_steps=8, convert_to_iter_based=True)]),
    'ema': dict(custom_hooks=[dict(type='EMAHook', momentum=0.01)]),
    'momentum': dict(
        optim_wrapper=dict(optimizer=dict(_delete_=True, type='SGD', lr=0.01, momentum=0.9,
                                                     weight_decay=1e-4)),
        param_scheduler=[dict(type='MultiStepLR', by_epoch=True, milestones=[4, 6]),
                         dict(type='CosineAnnealingMomentum', by_epoch=True, eta_min=0.5)]),
}


@pytest.mark.parametrize('recipe', [*RECIPES, 'amp'])
def test_recipes_schedulers_wrappers_and_hooks_roundtrip(place, monkeypatch, tmp_path, recipe):
    """One-cycle, EMA, momentum schedulers and mixed precision on the demo classifier."""
    config = small_config('configs/demo/cvt-tiny_shapes-cls.py', tmp_path / 'configs',
                          extra=RECIPES.get(recipe))
    runs = roundtrip(place, monkeypatch, config, tmp_path / 'work', True,
                     *(['--amp'] if recipe == 'amp' else []))
    assert_resumed(runs)
    if recipe == 'ema':
        assert 'ema_state_dict' in runs['resumed']
    if recipe == 'amp':
        wrapper = 'AmpOptimWrapper' if torch.cuda.is_available() else 'CpuAmpOptimWrapper'
        assert wrapper in Path(tmp_path / 'work', config.name).read_text()


def test_a_loss_scalers_state_reads_back(tmp_path):
    """What MMEngine's AmpOptimWrapper saves of its loss scaler (CUDA only to train)."""
    if not hasattr(torch.amp, 'GradScaler'):
        pytest.skip('torch.amp.GradScaler for the CPU needs torch >= 2.3')
    scaler = torch.amp.GradScaler('cpu', init_scale=1024.0)
    state = {'optimizer': {'state': {}, 'param_groups': [], 'loss_scaler': scaler.state_dict()}}
    torch.save(state, tmp_path / 'amp.pth')
    assert read_checkpoint(str(tmp_path / 'amp.pth')) == state


# --------------------------------------------------------------------------- real tools
TOOLBOXES = {
    'mmdet': 'configs/mask_rcnn/mask-rcnn_cvt-13_fpn_ms-crop-3x_coco.py',
    'mmseg': 'configs/upernet/upernet_cvt-13_4xb4-160k_ade20k-512x512.py',
    'mmpretrain': 'configs/cvt/cvt-13_8xb256_in1k-224px.py',
}


def subprocess_tool(place: Path, script: str, *args: object) -> subprocess.CompletedProcess:
    """``python tools/<script> ARGS`` run from ``place``; it must succeed."""
    result = subprocess.run([sys.executable, str(ROOT / 'tools' / script), *map(str, args)],
                            cwd=place, env=ENV, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.mark.parametrize('toolbox', TOOLBOXES)
def test_the_real_tools_train_test_and_resume(place, tmp_path, toolbox):
    config = small_config(TOOLBOXES[toolbox], tmp_path / 'configs')
    work = tmp_path / 'work'
    subprocess_tool(place, 'train.py', config, '--work-dir', work, *loop_options(config, 2))
    saved = checkpoints(work)
    assert len(saved) == 2
    subprocess_tool(place, 'test.py', config, saved[0], '--work-dir', work / 'test',
                    '--show-dir', 'vis')
    assert list((work / 'test' / 'vis').rglob('*.*'))
    subprocess_tool(place, 'train.py', config, '--work-dir', work / 'resumed', '--resume',
                    saved[0], *loop_options(config, 2))
    assert_resumed(dict(first=read_checkpoint(str(saved[0])),
                        last=read_checkpoint(str(saved[1])),
                        resumed=read_checkpoint(str(checkpoints(work / 'resumed')[-1]))))


@pytest.mark.parametrize('training_folder', ['missing', 'empty'])
def test_testing_never_needs_the_training_data(place, tmp_path, training_folder):
    """tools/test.py --show-dir of an mmseg config, without the training images."""
    config = small_config(TOOLBOXES['mmseg'], tmp_path / 'configs')
    work = tmp_path / 'work'
    subprocess_tool(place, 'train.py', config, '--work-dir', work, *loop_options(config, 1))
    checkpoint = next(work.glob('iter_*.pth'))
    elsewhere = tmp_path / 'elsewhere'
    ade = Path('data/ade/ADEChallengeData2016')
    for split in ('images/validation', 'annotations/validation'):
        shutil.copytree(place / ade / split, elsewhere / ade / split)
    if training_folder == 'empty':
        for split in ('images/training', 'annotations/training'):
            (elsewhere / ade / split).mkdir(parents=True)
    subprocess_tool(elsewhere, 'test.py', config, checkpoint, '--work-dir', work / 'test',
                    '--show-dir', 'vis')
    assert len(list((work / 'test' / 'vis').rglob('*.png'))) == 2
