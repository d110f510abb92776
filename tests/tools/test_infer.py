"""tools/infer.py, and the toolboxes' own inferencers on the project's configs.

tools/infer.py runs on the demo configs with checkpoints written here from the configs'
models: without ``dataset_meta`` (as a converted or hand-saved checkpoint), so the class
names must come from the config's test dataset, not from COCO's or Cityscapes' defaults; on
a folder of class folders whose images share names (``cat/0.png``, ``dog/0.png``), so every
output must be named after the image's path below the input. Checkpoints that do not fit the
config's model, or carry a malformed ``dataset_meta``, are refused in one line.

``DetInferencer``, ``MMSegInferencer`` and ``ImageClassificationInferencer`` themselves run
in a fresh interpreter (``tests.tools.infer_worker``) that imports nothing of this project:
the configs' ``custom_imports`` bring CvT in.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cvt_backbone import CheckpointError
from cvt_backbone.apis import build_model, load_config
from cvt_backbone.checkpoint.write import atomic_save
from demo_shapes import CLASSES, make_classification_set, make_scene_set
from tests.helpers import ENV, ROOT, run_tool

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
SEG_CLASSES = ('background', *CLASSES)
#: The relative names tools/infer.py gives the images of the nested input.
NESTED = ('cat/0', 'cat/1', 'dog/0')


def write_checkpoint(config: Path, path: Path, meta: dict) -> None:
    """The config's freshly built model, saved as ``{'state_dict', 'meta'}``."""
    torch.manual_seed(0)
    model, _ = build_model(str(config))
    atomic_save({'state_dict': model.state_dict(), 'meta': meta}, path)


# ----------------------------------------------------------------------------- helpers
def test_outputs_are_named_after_the_path_below_the_input_root():
    from inferencers import output_name

    assert output_name('in/cat/0.jpg', 'in', '.png') == 'cat/0.png'
    assert output_name('in/dog/0.jpg', 'in', '.json') == 'dog/0.json'
    assert output_name('/abs/in/a/b/c.tiff', '/abs/in', '.png') == 'a/b/c.png'
    assert output_name('x/0.jpg', '', '.png') == '0.png'
    # what a dataset lists outside its root stays inside the output folder
    assert output_name('/d/root/../../etc/x.png', '/d/root', '.png') == '_outside/etc/x.png'
    assert output_name('/etc/x.jpg', '/d/root', '.json') == '_outside/etc/x.json'
    assert output_name('/d/x/..', '/d/x', '.png') == '_outside/d.png'


def test_folders_are_searched_recursively(tmp_path):
    from infer import find_images

    for name in ('cat/0.jpg', 'dog/0.JPG', 'dog/deeper/1.png', 'notes.txt', 'empty/'):
        path = tmp_path / 'in' / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if not name.endswith('/'):
            path.write_bytes(b'x')
    root = str(tmp_path / 'in')
    images, found_root = find_images(root)
    assert found_root == root
    assert [Path(p).relative_to(root).as_posix() for p in images] == [
        'cat/0.jpg', 'dog/0.JPG', 'dog/deeper/1.png']
    images, found_root = find_images(f'{root}/*/0.*')
    assert found_root == root and len(images) == 2
    assert find_images(f'{root}/dog/0.JPG') == ([f'{root}/dog/0.JPG'], f'{root}/dog')


@pytest.mark.parametrize('toolbox', list(REAL))
def test_real_configs_name_their_datasets_classes(toolbox):
    """What a checkpoint without dataset_meta gets: the config's test dataset's classes
    (COCO's 80, ADE20K's 150, ImageNet's 1000), built without any data."""
    from inferencers import config_dataset_meta

    config, num_classes = REAL[toolbox]
    meta = config_dataset_meta(load_config(str(config)), toolbox)
    assert len(meta['classes']) == num_classes


def test_a_checkpoints_dataset_meta_is_checked_or_filled_from_the_config():
    from inferencers import checked_checkpoint

    cfg = load_config(str(DEMO['mmdet']))
    model = torch.nn.Linear(2, 3)
    state = model.state_dict()
    filled = checked_checkpoint(model, {'state_dict': state}, cfg, 'x.pth', 'mmdet')
    assert tuple(filled['meta']['dataset_meta']['classes']) == CLASSES
    own = {'classes': ['a', 'b', 'c']}
    kept = checked_checkpoint(model, {'state_dict': state, 'meta': {'dataset_meta': own}}, cfg,
                              'x.pth', 'mmdet')
    assert kept['meta']['dataset_meta'] == own
    with pytest.raises(CheckpointError, match=r"checkpoint 'x\.pth': its meta\.dataset_meta is "
                                              r'a list, not a mapping'):
        checked_checkpoint(model, {'state_dict': state, 'meta': {'dataset_meta': ['a']}}, cfg,
                           'x.pth', 'mmdet')
    with pytest.raises(CheckpointError, match=r'missing keys bias'):
        checked_checkpoint(model, {'state_dict': {'weight': state['weight']}}, cfg, 'x.pth',
                           'mmdet')


# ----------------------------------------------------------------------------- the tool
@pytest.fixture(scope='module')
def demo_setup(tmp_path_factory) -> dict:
    """Generated images, a nested input and the checkpoints the tool runs on."""
    tmp = tmp_path_factory.mktemp('infer')
    make_scene_set(str(tmp / 'shapes'), num_train=0, num_val=3)
    make_classification_set(str(tmp / 'shapes_cls'), num_train=0, num_val=3, size=64)
    scenes = sorted((tmp / 'shapes' / 'images' / 'val').glob('*.png'))
    # Class folders whose images share names; cat/0.png and dog/0.png are different scenes.
    nested = tmp / 'nested'
    for name, scene in zip(NESTED, scenes):
        (nested / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(scene, nested / f'{name}.png')
    escaped = tmp / 'escaped'  # a file name that would clear the screen
    escaped.mkdir()
    shutil.copy(scenes[0], escaped / 'x\x1b[2J.png')
    # The demo classifier names no classes in its config (its dataset reads them from the
    # folders): this one does.
    named_cls = tmp / 'cls_named.py'
    named_cls.write_text(f"_base_ = {str(DEMO['mmpretrain'])!r}\n"
                         f'test_dataloader = dict(dataset=dict(metainfo=dict('
                         f'classes={list(CLASSES)!r})))\n')
    checkpoints = {}
    for toolbox, config in DEMO.items():
        checkpoints[toolbox] = tmp / f'{toolbox}.pth'
        write_checkpoint(config, checkpoints[toolbox], {})
    checkpoints['mmpretrain-named'] = tmp / 'mmpretrain-named.pth'
    write_checkpoint(DEMO['mmpretrain'], checkpoints['mmpretrain-named'],
                     {'dataset_meta': {'classes': list(CLASSES)}})
    checkpoints['bad-meta'] = tmp / 'bad-meta.pth'
    write_checkpoint(DEMO['mmseg'], checkpoints['bad-meta'], {'dataset_meta': ['a', 'b']})
    checkpoints['bad-meta-cls'] = tmp / 'bad-meta-cls.pth'
    write_checkpoint(DEMO['mmpretrain'], checkpoints['bad-meta-cls'], {'dataset_meta': 'abc'})
    checkpoints['few-classes'] = tmp / 'few-classes.pth'
    write_checkpoint(DEMO['mmpretrain'], checkpoints['few-classes'],
                     {'dataset_meta': {'classes': ['a']}})
    return dict(tmp=tmp, checkpoints=checkpoints, scenes=tmp / 'shapes' / 'images' / 'val',
                cls_images=tmp / 'shapes_cls' / 'val', nested=nested, named_cls=named_cls,
                escaped=escaped)


@pytest.fixture(scope='module')
def tool_results(demo_setup) -> dict[str, subprocess.CompletedProcess]:
    """tools/infer.py, each case once (three at a time): name -> result; case ``NAME`` writes
    into ``<tmp>/tool_NAME``."""
    s, ckpt = demo_setup, demo_setup['checkpoints']
    nested = s['nested']
    cases = {
        # no dataset_meta: the config's classes; every detection drawn and counted
        'mmdet': [DEMO['mmdet'], ckpt['mmdet'], nested, '--score-thr', '0',
                  '--cfg-options', 'model.test_cfg.rcnn.max_per_img=2'],
        'mmseg': [DEMO['mmseg'], ckpt['mmseg'], nested],
        'mmpretrain': [s['named_cls'], ckpt['mmpretrain'], nested],
        # the checkpoint's classes, a folder of class folders
        'mmpretrain-named': [DEMO['mmpretrain'], ckpt['mmpretrain-named'], s['cls_images']],
        # a single image and a glob, under autocast
        'mmdet-amp': [DEMO['mmdet'], ckpt['mmdet'], s['scenes'], '--amp'],
        'mmseg-amp': [DEMO['mmseg'], ckpt['mmseg'], s['scenes'] / '00002.png', '--amp'],
        'mmpretrain-amp': [DEMO['mmpretrain'], ckpt['mmpretrain-named'],
                           s['cls_images'] / '*' / '*.png', '--amp'],
        'escaped': [DEMO['mmpretrain'], ckpt['mmpretrain-named'], s['escaped']],
        # refused
        'nothing': [DEMO['mmdet'], ckpt['mmdet'], s['tmp'] / 'no_such_folder' / '*.png'],
        'foreign': [DEMO['mmdet'], ckpt['mmpretrain'], nested],
        'bad-meta': [DEMO['mmseg'], ckpt['bad-meta'], nested],
        'bad-meta-cls': [DEMO['mmpretrain'], ckpt['bad-meta-cls'], nested],
        'few-classes': [DEMO['mmpretrain'], ckpt['few-classes'], nested],
        'cuda': [DEMO['mmdet'], ckpt['mmdet'], nested, '--device', 'cuda'],
    }

    def run(name: str) -> subprocess.CompletedProcess:
        return run_tool('infer.py', *cases[name], '--out-dir', s['tmp'] / f'tool_{name}')

    with ThreadPoolExecutor(max_workers=3) as pool:
        return dict(zip(cases, pool.map(run, cases)))


def _ok(result: subprocess.CompletedProcess) -> dict[str, str]:
    """The tool's line per image: name -> what it says."""
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [re.match(r'^(\S+\.png): (.*)$', line) for line in result.stdout.splitlines()]
    return {line[1]: line[2] for line in lines if line}


def _files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob('*') if p.is_file())


@pytest.mark.slow
@pytest.mark.parametrize('toolbox, preds, suffix', [('mmdet', 'preds', '.json'),
                                                    ('mmseg', 'pred', '.png'),
                                                    ('mmpretrain', 'preds', '.json')])
def test_outputs_keep_the_inputs_folders_so_none_is_overwritten(tool_results, demo_setup,
                                                                toolbox, preds, suffix):
    said = _ok(tool_results[toolbox])
    assert sorted(said) == [f'{name}.png' for name in NESTED]
    out = demo_setup['tmp'] / f'tool_{toolbox}'
    assert _files(out / 'vis') == [f'{name}.png' for name in NESTED]
    assert _files(out / preds) == [f'{name}{suffix}' for name in NESTED]
    # cat/0.png and dog/0.png are different scenes: their drawings differ
    assert not np.array_equal(np.asarray(Image.open(out / 'vis' / 'cat' / '0.png')),
                              np.asarray(Image.open(out / 'vis' / 'dog' / '0.png')))
    assert f'{len(NESTED)} image(s): drawings in {out / "vis"}' in tool_results[toolbox].stdout


@pytest.mark.slow
def test_detections_are_named_with_the_configs_classes(tool_results, demo_setup):
    said = _ok(tool_results['mmdet'])
    names = set()
    for line in said.values():
        count, _, listed = line.partition(' objects')
        assert int(count) == 2  # --cfg-options model.test_cfg.rcnn.max_per_img=2
        names.update(listed.strip(' ()').split(', '))
    assert names and names <= set(CLASSES)  # not COCO's
    for name in NESTED:
        pred = json.loads((demo_setup['tmp'] / 'tool_mmdet' / 'preds' / f'{name}.json')
                          .read_text())
        assert len(pred['labels']) == 2 and set(pred['labels']) <= {0, 1, 2}


@pytest.mark.slow
def test_segments_are_named_with_the_configs_classes(tool_results, demo_setup):
    said = _ok(tool_results['mmseg'])
    for name in NESTED:
        assert set(said[f'{name}.png'].split(', ')) <= set(SEG_CLASSES)  # not Cityscapes'
        labels = np.asarray(Image.open(demo_setup['tmp'] / 'tool_mmseg' / 'pred' / f'{name}.png'))
        assert labels.shape == (128, 128) and labels.max() < len(SEG_CLASSES)


@pytest.mark.slow
@pytest.mark.parametrize('case', ['mmpretrain', 'mmpretrain-named'])
def test_classes_are_named_from_the_checkpoint_else_the_config(tool_results, demo_setup, case):
    said = _ok(tool_results[case])
    images = NESTED if case == 'mmpretrain' else [
        p.relative_to(demo_setup['cls_images']).with_suffix('').as_posix()
        for p in demo_setup['cls_images'].rglob('*.png')]
    assert sorted(said) == sorted(f'{name}.png' for name in images)
    for name in images:
        label = said[f'{name}.png'].split(' (')[0]
        assert label in CLASSES, said
        pred = json.loads((demo_setup['tmp'] / f'tool_{case}' / 'preds' / f'{name}.json')
                          .read_text())
        assert pred['pred_class'] == label == CLASSES[pred['pred_label']]


@pytest.mark.slow
@pytest.mark.parametrize('toolbox, preds', [('mmdet', 'preds'), ('mmseg', 'pred'),
                                            ('mmpretrain', 'preds')])
def test_amp_draws_and_writes_every_image(tool_results, demo_setup, toolbox, preds):
    said = _ok(tool_results[f'{toolbox}-amp'])
    out = demo_setup['tmp'] / f'tool_{toolbox}-amp'
    expected = 1 if toolbox == 'mmseg' else 3
    assert len(said) == expected
    assert len(_files(out / 'vis')) == len(_files(out / preds)) == expected


@pytest.mark.slow
def test_file_names_are_printed_escaped(tool_results):
    result = tool_results['escaped']
    assert result.returncode == 0, result.stderr[-3000:]
    assert '\x1b' not in result.stdout and 'x\\x1b[2J.png: ' in result.stdout


def assert_one_error_line(result: subprocess.CompletedProcess, pattern: str) -> None:
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-3000:]
    assert 'Traceback' not in result.stderr, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert re.fullmatch(pattern, last), last


@pytest.mark.slow
@pytest.mark.parametrize('case, pattern', [
    ('nothing', r"error: '.*/no_such_folder/\*\.png' names no image \(.*\)"),
    ('foreign', r"error: checkpoint '.*/mmpretrain\.pth' does not fit the model of this "
                r'config: missing keys .*(neck|rpn_head|roi_head)\..*; unexpected keys '
                r'.*head\.fc\..*'),
    ('bad-meta', r"error: checkpoint '.*/bad-meta\.pth': its meta\.dataset_meta is a list, "
                 r'not a mapping'),
    ('bad-meta-cls', r"error: checkpoint '.*/bad-meta-cls\.pth': its meta\.dataset_meta is a "
                     r'str, not a mapping'),
    ('few-classes', r"error: checkpoint '.*/few-classes\.pth': its meta\.dataset_meta\.classes has "
                    r'1 name\(s\) where the model predicts 3 classes'),
])
def test_bad_input_is_refused_in_one_line(tool_results, demo_setup, case, pattern):
    assert_one_error_line(tool_results[case], pattern)
    assert not (demo_setup['tmp'] / f'tool_{case}' / 'vis').exists()


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason='needs a machine without CUDA')
def test_cuda_without_a_gpu_is_one_error_line(tool_results):
    assert_one_error_line(tool_results['cuda'], r'error: --device cuda: torch sees no CUDA GPU '
                                                r'on this machine; use --device cpu')


# ----------------------------------------------------------------------------- the inferencers
@pytest.fixture(scope='module')
def worker_results(demo_setup) -> dict[str, dict]:
    """Each toolbox's own inferencer on one image, each in its own fresh interpreter, with a
    checkpoint that carries its classes and palette (as tools/train.py's do)."""
    from inferencers import config_dataset_meta

    images = {'mmdet': demo_setup['scenes'] / '00000.png',
              'mmseg': demo_setup['scenes'] / '00001.png',
              'mmpretrain': next(demo_setup['cls_images'].rglob('*.png'))}
    metas = {toolbox: config_dataset_meta(load_config(str(DEMO[toolbox])), toolbox)
             for toolbox in ('mmdet', 'mmseg')}
    metas['mmpretrain'] = {'classes': list(CLASSES)}
    checkpoints = {toolbox: demo_setup['tmp'] / f'worker_{toolbox}.pth' for toolbox in DEMO}
    for toolbox, checkpoint in checkpoints.items():  # not in threads: configs load serially
        write_checkpoint(DEMO[toolbox], checkpoint, {'dataset_meta': metas[toolbox]})

    def run(toolbox: str) -> dict:
        checkpoint = checkpoints[toolbox]
        out_dir = demo_setup['tmp'] / f'out_{toolbox}'
        result = subprocess.run(
            [sys.executable, '-m', 'tests.tools.infer_worker', toolbox, str(DEMO[toolbox]),
             str(checkpoint), str(images[toolbox]), str(out_dir)],
            cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        return dict(json.loads((out_dir / 'summary.json').read_text()),
                    expected=list(metas[toolbox]['classes']))

    with ThreadPoolExecutor(max_workers=3) as pool:
        return dict(zip(DEMO, pool.map(run, DEMO)))


@pytest.mark.slow
@pytest.mark.parametrize('toolbox', list(DEMO))
def test_inferencer_works_through_custom_imports_alone(worker_results, toolbox):
    result = worker_results[toolbox]
    assert not result['imported_before'] and result['imported_by_config']
    assert result['weights_loaded']
    assert result['classes'] == result['expected']


@pytest.mark.slow
def test_inferencers_predict_in_the_configs_terms(worker_results, demo_setup):
    det, seg, cls = (worker_results[t]['prediction'] for t in DEMO)
    assert det['num_boxes'] > 0 and set(det['labels']) <= set(range(len(CLASSES)))
    assert seg['shape'] == [128, 128] and set(seg['labels']) <= set(range(len(SEG_CLASSES)))
    assert cls['num_scores'] == len(CLASSES) and cls['name'] == CLASSES[cls['label']]
    assert (demo_setup['tmp'] / 'out_mmdet' / 'vis' / '00000.png').is_file()
    assert (demo_setup['tmp'] / 'out_mmseg' / 'vis' / '00001.png').is_file()


@pytest.mark.slow
def test_the_docs_inferencer_snippet_runs_as_written(demo_setup, tmp_path):
    """The first code block of docs/deployment.md, unchanged, in a fresh interpreter, in a
    folder laid out as ``make demo`` leaves it: the three inferencers are built one after the
    other in one process and the detector draws."""
    page = (ROOT / 'docs' / 'deployment.md').read_text()
    snippet = page.split('```python\n', 1)[1].split('```', 1)[0]
    (tmp_path / 'configs').symlink_to(ROOT / 'configs')
    weights = {'mmdet': 'work_dirs/demo/mask_rcnn/epoch_5.pth',
               'mmseg': 'work_dirs/demo/upernet/iter_1000.pth',
               'mmpretrain': 'work_dirs/demo/cls/epoch_12.pth'}
    for toolbox, path in weights.items():
        assert f"'{path}'" in snippet, path
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).symlink_to(demo_setup['checkpoints'][
            'mmpretrain-named' if toolbox == 'mmpretrain' else toolbox])
    image = 'data/shapes/images/val/00000.png'
    assert f"'{image}'" in snippet
    (tmp_path / image).parent.mkdir(parents=True)
    (tmp_path / image).symlink_to(demo_setup['scenes'] / '00000.png')
    result = subprocess.run([sys.executable, '-c', snippet], cwd=tmp_path, env=ENV,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / 'work_dirs' / 'infer' / 'vis' / '00000.png').is_file()
