"""The toolboxes' own inferencers on the project's configs, and tools/infer.py.

``DetInferencer``, ``MMSegInferencer`` and ``ImageClassificationInferencer`` run on the demo
configs in a fresh interpreter (``tests.tools.infer_worker``) that imports nothing of this
project: the configs' ``custom_imports`` bring CvT in. The checkpoints are written here from
the configs' models, without ``dataset_meta`` for the detector and the segmentor (as a
converted or hand-saved checkpoint), so the class names must come from the config and not
from COCO's or Cityscapes' defaults. The real configs (COCO, ADE20K, ImageNet) get their
datasets' class names the same way.
"""
from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from cvt_backbone.apis import build_model
from cvt_backbone.checkpoint.write import atomic_save
from demo_shapes import CLASSES, make_classification_set, make_scene_set
from tests.helpers import ENV, ROOT, run_tool
from tests.tools.infer_worker import run as run_inferencer

pytestmark = pytest.mark.slow  # tool subprocesses, end to end

DEMO = {
    'mmdet': ROOT / 'configs' / 'demo' / 'mask-rcnn_cvt-tiny_fpn_shapes.py',
    'mmseg': ROOT / 'configs' / 'demo' / 'upernet_cvt-tiny_shapes.py',
    'mmpretrain': ROOT / 'configs' / 'demo' / 'cvt-tiny_shapes-cls.py',
}
REAL = {
    'mmdet': (ROOT / 'configs' / 'mask_rcnn' / 'mask-rcnn_cvt-13_fpn_1x_coco.py', 80),
    'mmseg': (ROOT / 'configs' / 'upernet' / 'upernet_cvt-13_4xb4-160k_ade20k-512x512.py', 150),
    'mmpretrain': (ROOT / 'configs' / 'cvt' / 'cvt-13_8xb256_in1k-224px.py', 1000),
}


def write_checkpoint(config: Path, path: Path, meta: dict) -> None:
    """The config's freshly built model, saved as ``{'state_dict', 'meta'}``."""
    torch.manual_seed(0)
    model, _ = build_model(str(config))
    atomic_save({'state_dict': model.state_dict(), 'meta': meta}, path)


@pytest.fixture(scope='module')
def demo_setup(tmp_path_factory) -> dict:
    """Generated images and a checkpoint of each demo config."""
    tmp = tmp_path_factory.mktemp('infer')
    make_scene_set(str(tmp / 'shapes'), num_train=0, num_val=3)
    make_classification_set(str(tmp / 'shapes_cls'), num_train=0, num_val=3, size=64)
    checkpoints = {}
    for toolbox, config in DEMO.items():
        checkpoints[toolbox] = tmp / f'{toolbox}.pth'
        # tools/train.py's checkpoints carry the classes; this classifier's too, as
        # mmpretrain takes class names from nowhere else for a folder dataset.
        meta = {'dataset_meta': {'classes': CLASSES}} if toolbox == 'mmpretrain' else {}
        write_checkpoint(config, checkpoints[toolbox], meta)
    return dict(tmp=tmp, checkpoints=checkpoints, scenes=tmp / 'shapes' / 'images' / 'val',
                cls_images=tmp / 'shapes_cls' / 'val')


@pytest.fixture(scope='module')
def worker_results(demo_setup) -> dict[str, dict]:
    """Each toolbox's inferencer on one image, each in its own fresh interpreter."""
    images = {'mmdet': demo_setup['scenes'] / '00000.png',
              'mmseg': demo_setup['scenes'] / '00001.png',
              'mmpretrain': next(demo_setup['cls_images'].rglob('*.png'))}

    def run(toolbox: str) -> dict:
        out_dir = demo_setup['tmp'] / f'out_{toolbox}'
        result = subprocess.run(
            [sys.executable, '-m', 'tests.tools.infer_worker', toolbox, str(DEMO[toolbox]),
             str(demo_setup['checkpoints'][toolbox]), str(images[toolbox]), str(out_dir)],
            cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        return json.loads((out_dir / 'summary.json').read_text())

    with ThreadPoolExecutor(max_workers=3) as pool:
        return dict(zip(DEMO, pool.map(run, DEMO)))


@pytest.mark.parametrize('toolbox', list(DEMO))
def test_inferencer_works_through_custom_imports_alone(worker_results, toolbox):
    result = worker_results[toolbox]
    assert not result['imported_before'] and result['imported_by_config']
    assert result['weights_loaded']


def test_det_inferencer_names_the_configs_classes(worker_results, demo_setup):
    result = worker_results['mmdet']
    assert result['classes'] == list(CLASSES)  # not COCO's 80
    assert result['prediction']['num_boxes'] > 0
    assert set(result['prediction']['labels']) <= set(range(len(CLASSES)))
    assert (demo_setup['tmp'] / 'out_mmdet' / 'vis' / '00000.png').is_file()


def test_seg_inferencer_names_the_configs_classes(worker_results, demo_setup):
    result = worker_results['mmseg']
    assert result['classes'] == ['background', *CLASSES]  # not Cityscapes' 19
    assert result['prediction']['shape'] == [128, 128]
    assert set(result['prediction']['labels']) <= set(range(len(CLASSES) + 1))
    assert (demo_setup['tmp'] / 'out_mmseg' / 'vis' / '00001.png').is_file()


def test_classification_inferencer_predicts_a_named_class(worker_results):
    result = worker_results['mmpretrain']
    assert result['prediction']['num_scores'] == len(CLASSES)
    assert result['prediction']['name'] == CLASSES[result['prediction']['label']]


@pytest.mark.parametrize('toolbox', list(REAL))
def test_real_configs_get_their_datasets_classes(toolbox, tmp_path):
    config, num_classes = REAL[toolbox]
    checkpoint = tmp_path / 'model.pth'
    write_checkpoint(config, checkpoint, {})
    model, prediction = run_inferencer(toolbox, str(config), str(checkpoint),
                                       str(_image(tmp_path)), str(tmp_path / 'out'))
    meta = getattr(model, 'dataset_meta', None) or model._dataset_meta
    assert len(meta['classes']) == num_classes
    assert prediction


def _image(folder: Path) -> Path:
    import numpy as np
    from PIL import Image
    path = folder / 'image.png'
    Image.fromarray((np.random.default_rng(0).random((64, 80, 3)) * 255).astype('uint8')
                    ).save(path)
    return path


@pytest.fixture(scope='module')
def tool_results(demo_setup) -> dict[str, subprocess.CompletedProcess]:
    """tools/infer.py on a folder (mmdet), a single image (mmseg) and a glob (mmpretrain),
    each also with ``--amp``."""
    inputs = {'mmdet': demo_setup['scenes'], 'mmseg': demo_setup['scenes'] / '00002.png',
              'mmpretrain': demo_setup['cls_images'] / '*' / '*.png',
              'nothing': demo_setup['tmp'] / 'no_such_folder' / '*.png'}
    inputs.update({f'{toolbox}-amp': inputs[toolbox] for toolbox in DEMO})

    def run(name: str) -> subprocess.CompletedProcess:
        toolbox = 'mmdet' if name == 'nothing' else name.split('-')[0]
        amp = ['--amp'] if name.endswith('-amp') else []
        return run_tool('infer.py', DEMO[toolbox], demo_setup['checkpoints'][toolbox],
                        inputs[name], '--out-dir', demo_setup['tmp'] / f'tool_{name}', *amp)

    with ThreadPoolExecutor(max_workers=3) as pool:
        return dict(zip(inputs, pool.map(run, inputs)))


@pytest.mark.parametrize('amp', ['', '-amp'])
@pytest.mark.parametrize('toolbox, folder', [('mmdet', 'preds'), ('mmseg', 'pred'),
                                             ('mmpretrain', 'preds')])
def test_infer_tool_draws_and_writes_every_image(tool_results, demo_setup, toolbox, folder,
                                                 amp):
    result = tool_results[toolbox + amp]
    assert result.returncode == 0, result.stderr[-3000:]
    out = demo_setup['tmp'] / f'tool_{toolbox}{amp}'
    expected = 1 if toolbox == 'mmseg' else 3
    assert len(list((out / 'vis').glob('*.png'))) == expected
    assert len(list((out / folder).iterdir())) == expected
    assert f'{expected} image(s)' in result.stdout


def test_infer_tool_names_input_without_images(tool_results):
    result = tool_results['nothing']
    assert result.returncode != 0
    assert 'Traceback' not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith('error: ')
    assert 'names no image' in result.stderr



def test_the_docs_inferencer_snippet_runs_as_written(demo_setup, tmp_path):
    """The first code block of docs/deployment.md, unchanged, in a fresh interpreter, in a
    folder laid out as ``make demo`` leaves it: the three inferencers are built one after the
    other in one process (each in its own toolbox's registry scope) and the detector draws."""
    page = (ROOT / 'docs' / 'deployment.md').read_text()
    snippet = page.split('```python\n', 1)[1].split('```', 1)[0]
    (tmp_path / 'configs').symlink_to(ROOT / 'configs')
    weights = {'mmdet': 'work_dirs/demo/mask_rcnn/epoch_5.pth',
               'mmseg': 'work_dirs/demo/upernet/iter_1000.pth',
               'mmpretrain': 'work_dirs/demo/cls/epoch_12.pth'}
    for toolbox, path in weights.items():
        assert f"'{path}'" in snippet, path
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).symlink_to(demo_setup['checkpoints'][toolbox])
    image = 'data/shapes/images/val/00000.png'
    assert f"'{image}'" in snippet
    (tmp_path / image).parent.mkdir(parents=True)
    (tmp_path / image).symlink_to(demo_setup['scenes'] / '00000.png')
    result = subprocess.run([sys.executable, '-c', snippet], cwd=tmp_path, env=ENV,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / 'work_dirs' / 'infer' / 'vis' / '00000.png').is_file()
