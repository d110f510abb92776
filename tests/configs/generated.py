"""Tiny generated datasets in the layouts the real configs read, and the changes that make a
real config train in seconds on them.

The images are the demo's shapes (``tools.demo.shapes``), rearranged into COCO's, ADE20K's,
ImageNet's and the ``configs/own_dataset/`` layouts, with the class names each dataset
expects (COCO's first three names for COCO, ``cat``/``dog``/``fox`` for datasets of one's
own...).
"""
from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

from mmengine.config import Config
from PIL import Image

from demo_shapes import CLASSES, make_classification_set, make_scene_set
from tests.helpers import TINY

#: Images per split: two iterations of batch 2 per epoch.
NUM_TRAIN, NUM_VAL, BATCH = 4, 2, 2
#: Side of the generated images.
SIZE = 64


def _scenes(root: Path) -> Path:
    """The demo's scenes (images, COCO json, label maps) under ``root/scenes``, once."""
    scenes = root / 'scenes'
    if not scenes.exists():
        make_scene_set(str(scenes), num_train=NUM_TRAIN, num_val=NUM_VAL, size=SIZE)
    return scenes


def write_coco(root: Path, data_root: str, classes: Sequence[str], ann_files: dict[str, str],
               img_dirs: dict[str, str]) -> None:
    """A COCO-format dataset under ``root/data_root``: the scenes' images in ``img_dirs``
    (per split) and their annotations in ``ann_files``, the shapes named ``classes``."""
    scenes = _scenes(root)
    for split in ('train', 'val'):
        coco = json.loads((scenes / 'annotations' / f'instances_{split}.json').read_text())
        for category in coco['categories']:
            category['name'] = classes[CLASSES.index(category['name'])]
        ann = root / data_root / ann_files[split]
        ann.parent.mkdir(parents=True, exist_ok=True)
        ann.write_text(json.dumps(coco))
        shutil.copytree(scenes / 'images' / split, root / data_root / img_dirs[split],
                        dirs_exist_ok=True)


def write_segmentation(root: Path, data_root: str, img_dirs: dict[str, str],
                       map_dirs: dict[str, str]) -> None:
    """Scenes as JPEG images in ``img_dirs`` and their label maps (0 = background, 1..3 the
    shapes) as PNG in ``map_dirs``, per split, under ``root/data_root``."""
    scenes = _scenes(root)
    for split in ('train', 'val'):
        images, maps = root / data_root / img_dirs[split], root / data_root / map_dirs[split]
        images.mkdir(parents=True, exist_ok=True)
        shutil.copytree(scenes / 'masks' / split, maps, dirs_exist_ok=True)
        for png in sorted((scenes / 'images' / split).glob('*.png')):
            Image.open(png).convert('RGB').save(images / f'{png.stem}.jpg', quality=95)


def write_image_folders(root: Path, data_root: str, classes: Sequence[str],
                        meta: bool = False) -> None:
    """One folder per class under ``train/`` and ``val/`` of ``root/data_root``, the shapes
    named ``classes``; with ``meta``, ImageNet's ``meta/{train,val}.txt`` lists as well."""
    shapes = root / 'shapes_cls'
    if not shapes.exists():
        make_classification_set(str(shapes), num_train=NUM_TRAIN, num_val=NUM_VAL, size=SIZE)
    for split in ('train', 'val'):
        lines = []
        for folder in sorted((shapes / split).iterdir()):
            name = classes[CLASSES.index(folder.name)]
            shutil.copytree(folder, root / data_root / split / name, dirs_exist_ok=True)
            lines += [f'{name}/{png.name} {classes.index(name)}'
                      for png in sorted(folder.glob('*.png'))]
        if meta:
            (root / data_root / 'meta').mkdir(parents=True, exist_ok=True)
            (root / data_root / 'meta' / f'{split}.txt').write_text('\n'.join(lines) + '\n')


def _transforms(pipeline: object) -> Iterator[dict]:
    """Every transform of a pipeline, also those inside ``RandomChoice`` and the like."""
    if isinstance(pipeline, dict):
        yield pipeline
        for key in ('transforms', 'transforms_list'):
            yield from _transforms(pipeline.get(key))
    elif isinstance(pipeline, (list, tuple)):
        for item in pipeline:
            yield from _transforms(item)


def _datasets(dataset: object) -> Iterator[dict]:
    while isinstance(dataset, dict):
        yield dataset
        dataset = dataset.get('dataset')


def small(cfg: Config, narrow: bool = True) -> Config:
    """The config on :data:`SIZE`-pixel images, batch :data:`BATCH` without workers, no
    downloads; with ``narrow``, a small CvT (channels of necks and heads to match).

    The schedule, the loops' lengths, hooks and optimizer are left as the config has them.
    """
    cfg = copy.deepcopy(cfg)
    crop = SIZE * 3 // 4
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        if not cfg.get(loader):
            continue
        cfg[loader].update(batch_size=BATCH, num_workers=0, persistent_workers=False)
        for dataset in _datasets(cfg[loader].get('dataset')):
            for t in _transforms(dataset.get('pipeline')):
                if 'scale' in t:
                    t['scale'] = SIZE if isinstance(t['scale'], (int, float)) else (SIZE, SIZE)
                if 'scales' in t:
                    t['scales'] = [(SIZE, SIZE)]
                if 'crop_size' in t:
                    t['crop_size'] = crop if isinstance(t['crop_size'], int) else (crop, crop)
    model = cfg.model
    if model.get('data_preprocessor', {}).get('size'):
        model.data_preprocessor.size = (SIZE, SIZE)
    backbone = model.backbone
    backbone.init_cfg = None
    if narrow:
        backbone.arch = TINY
        channels = TINY['embed_dims']
        if model.get('neck') and isinstance(model.neck.get('in_channels'), list):
            model.neck.in_channels = channels[-len(model.neck.in_channels):]
        for name in ('decode_head', 'auxiliary_head'):
            head = model.get(name)
            if head:
                index = head.get('in_index', -1)
                head.in_channels = ([channels[i] for i in index] if isinstance(index, list)
                                    else channels[index])
        if model.get('head') and 'in_channels' in model.head:
            model.head.in_channels = channels[-1]
    return cfg
