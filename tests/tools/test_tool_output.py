"""What a newcomer gets from the tools: shortened schedules that work, every test image drawn
into one place under its own name, metrics rounded to what they mean."""
from __future__ import annotations

import json
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from cvt_backbone.apis import build_model
from cvt_backbone.checkpoint.write import atomic_save
from demo_shapes import CLASSES, make_scene_set
from tests.helpers import DEMO_CLS_CONFIG, ROOT, run_tool

pytestmark = pytest.mark.slow  # tool subprocesses, end to end

DET_CONFIG = ROOT / 'configs' / 'demo' / 'mask-rcnn_cvt-tiny_fpn_shapes.py'
SEG_CONFIG = ROOT / 'configs' / 'demo' / 'upernet_cvt-tiny_shapes.py'


@pytest.fixture(scope='module')
def run(trained_cls) -> dict:
    """The demo classifier shortened with --cfg-options to 1 epoch, then tested with
    --show-dir and --metrics-out (the session's one run)."""
    return trained_cls


def _files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob('*') if p.is_file())


def test_a_schedule_shortened_on_the_command_line_fits_and_says_so(run):
    out = run['trained'].stdout
    assert ('param_scheduler: the loop is shorter than the 4 iterations the schedule was '
            'written for: every milestone was scaled by 0.5 to the 2 iterations of this run') in out
    assert (run['tmp'] / 'work' / 'epoch_1.pth').is_file()


def test_a_run_warns_only_of_what_a_user_can_act_on(run):
    """No deprecation warning of pkg_resources, which MMEngine's config loading triggers."""
    for result in (run['trained'], run['tested']):
        assert 'pkg_resources' not in result.stderr, result.stderr[-3000:]


def test_show_dir_draws_every_test_image_under_its_own_name(run):
    images = _files(Path(run['data'], 'val'))
    assert len(images) > 1 and all('/' in name for name in images)  # <class>/<n>.png
    assert _files(run['tmp'] / 'work' / 'vis') == images


def test_metrics_are_rounded_to_what_they_mean(run):
    metrics = json.loads((run['tmp'] / 'metrics.json').read_text())
    assert metrics and all(value == round(value, 4) for value in metrics.values())


@pytest.fixture(scope='module')
def drawn(tmp_path_factory, shapes_cls) -> dict:
    """tools/test.py --show-dir for each toolbox's demo config, on test images in folders
    where one name occurs twice (``a/0.png``, ``b/0.png``); the checkpoints are the configs'
    freshly built models."""
    tmp = tmp_path_factory.mktemp('show_dir')
    make_scene_set(str(tmp / 'flat'), num_train=0, num_val=3)
    scenes = tmp / 'scenes'
    names = {'00000': 'a/0', '00001': 'b/0', '00002': 'b/1'}
    for kind in ('images', 'masks'):
        for flat, name in names.items():
            (scenes / kind / 'val' / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(tmp / 'flat' / kind / 'val' / f'{flat}.png',
                        scenes / kind / 'val' / f'{name}.png')
    annotations = json.loads((tmp / 'flat' / 'annotations' / 'instances_val.json').read_text())
    for image in annotations['images']:
        image['file_name'] = names[image['file_name'][:-4]] + '.png'
    ann_file = scenes / 'annotations' / 'instances_val.json'
    ann_file.parent.mkdir()
    ann_file.write_text(json.dumps(annotations))
    classes = tmp / 'classes'
    for name in CLASSES:
        (classes / 'val' / name).mkdir(parents=True)
        shutil.copy(sorted(shapes_cls.glob(f'*/{name}/*.png'))[0],
                    classes / 'val' / name / '0.png')

    cases = {'mmdet': (DET_CONFIG, scenes, [f'test_evaluator.ann_file={ann_file}']),
             'mmseg': (SEG_CONFIG, scenes, []),
             'mmpretrain': (DEMO_CLS_CONFIG, classes, [])}
    for toolbox, (config, _, _) in cases.items():
        torch.manual_seed(0)
        model, _ = build_model(str(config))
        atomic_save({'state_dict': model.state_dict(), 'meta': {}}, tmp / f'{toolbox}.pth')

    def test(toolbox: str) -> subprocess.CompletedProcess:
        config, data, options = cases[toolbox]
        return run_tool('test.py', config, tmp / f'{toolbox}.pth', '--work-dir',
                        tmp / toolbox, '--show-dir', 'vis', '--cfg-options',
                        f'test_dataloader.dataset.data_root={data}', *options)

    with ThreadPoolExecutor(max_workers=3) as pool:
        results = dict(zip(cases, pool.map(test, cases)))
    return dict(tmp=tmp, results=results)


@pytest.mark.parametrize('toolbox, expected', [
    ('mmdet', ['a/0.png', 'b/0.png', 'b/1.png']),
    ('mmseg', ['a/0.png', 'b/0.png', 'b/1.png']),
    ('mmpretrain', [f'{name}/0.png' for name in CLASSES]),
])
def test_show_dir_keeps_the_image_folders_so_none_is_overwritten(drawn, toolbox, expected):
    result = drawn['results'][toolbox]
    assert result.returncode == 0, result.stderr[-3000:]
    out = drawn['tmp'] / toolbox / 'vis'
    assert f'Drawing the predictions into {out}' in result.stdout
    assert _files(out) == expected
