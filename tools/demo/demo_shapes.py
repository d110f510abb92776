"""Synthetic "shapes" data for the demos: generated at run time, no downloads.

Scenes are filled circles, squares and triangles of random size, colour and rotation on
textured backgrounds (noise, stripes, gradients). Later shapes occlude earlier ones; each
instance's mask is its visible part. One generator writes three datasets:

* classification (one shape per image) as an mmpretrain ``CustomDataset`` folder tree:
  ``<root>/{train,val}/<class>/<n>.png``;
* instance segmentation as COCO json with RLE masks:
  ``<root>/images/{train,val}/<n>.png`` and ``<root>/annotations/instances_{train,val}.json``;
* semantic segmentation in mmseg's folder format over the same images:
  ``<root>/masks/{train,val}/<n>.png`` (0 = background, ``k`` = class ``k``).
"""
from __future__ import annotations

import inspect
import json
import math
import os
import os.path as osp
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from mmengine.config import Config
from PIL import Image, ImageDraw

#: The class names, from the demo configs (one source for the data and the models).
CLASSES = tuple(Config.fromfile(osp.join(osp.dirname(osp.dirname(osp.dirname(
    osp.abspath(__file__)))), 'configs', 'demo', '_base_', 'shapes.py')).shapes_classes)


@dataclass
class Instance:
    """One visible shape: its class index (0-based) and boolean mask ``(H, W)``."""
    label: int
    mask: np.ndarray


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A textured background ``(size, size, 3)`` uint8 of moderate contrast."""
    kind = rng.integers(3)
    base = rng.uniform(60, 190, size=3)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    if kind == 0:
        img = base + rng.normal(0, 18, size=(size, size, 3))
    elif kind == 1:
        angle = rng.uniform(0, math.pi)
        freq = rng.uniform(4, 12)
        wave = np.sin(2 * math.pi * freq * (xx * math.cos(angle) + yy * math.sin(angle)))
        img = base + 25 * wave[..., None] + rng.normal(0, 6, size=(size, size, 3))
    else:
        direction = rng.uniform(-1, 1, size=3) * 50
        img = base + (xx + yy)[..., None] / 2 * direction + rng.normal(0, 6, (size, size, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def _contrasting_colour(rng: np.random.Generator, behind: np.ndarray,
                        min_distance: float = 120.) -> tuple[int, int, int]:
    """A random colour at least ``min_distance`` (RGB, Euclidean) from the colour ``behind``."""
    for _ in range(100):
        colour = rng.integers(0, 256, size=3)
        if np.linalg.norm(colour - behind) >= min_distance:
            break
    return tuple(int(c) for c in colour)


def _shape_polygon(label: int, cx: float, cy: float, r: float, angle: float
                   ) -> list[tuple[float, float]] | None:
    """Vertices of a square or triangle of circumradius ``r``; None for a circle."""
    if CLASSES[label] == 'circle':
        return None
    sides = 4 if CLASSES[label] == 'square' else 3
    return [(cx + r * math.cos(angle + 2 * math.pi * k / sides),
             cy + r * math.sin(angle + 2 * math.pi * k / sides)) for k in range(sides)]


def _draw(draw: ImageDraw.ImageDraw, label: int, cx: float, cy: float, r: float,
          angle: float, fill) -> None:
    polygon = _shape_polygon(label, cx, cy, r, angle)
    if polygon is None:
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    else:
        draw.polygon(polygon, fill=fill)


def render_scene(rng: np.random.Generator, size: int, num_objects: tuple[int, int],
                 radius: tuple[float, float], min_visible: float = 0.5
                 ) -> tuple[np.ndarray, list[Instance]]:
    """Render one scene.

    Args:
        rng: Random generator.
        size: Image side in pixels.
        num_objects: Inclusive range of shapes to draw.
        radius: Range of circumradii, as fractions of ``size``.
        min_visible: A new shape is only placed where every earlier shape keeps at least this
            fraction of its area visible (up to 10 tries, else the shape is left out).

    Returns:
        The image ``(size, size, 3)`` uint8 and the visible instances, in drawing order.
    """
    img = Image.fromarray(_background(rng, size))
    draw = ImageDraw.Draw(img)
    label_map = np.full((size, size), -1, dtype=np.int32)
    full_areas: list[int] = []
    labels: list[int] = []
    for _ in range(int(rng.integers(num_objects[0], num_objects[1] + 1))):
        for _attempt in range(10):
            label = int(rng.integers(len(CLASSES)))
            r = rng.uniform(*radius) * size
            cx, cy = rng.uniform(r * 0.7, size - r * 0.7, size=2)
            angle = rng.uniform(0, 2 * math.pi)
            canvas = Image.new('L', (size, size), 0)
            _draw(ImageDraw.Draw(canvas), label, cx, cy, r, angle, 255)
            mask = np.asarray(canvas) > 127
            new_map = label_map.copy()
            new_map[mask] = len(labels)
            visible = [(new_map == i).sum() / max(a, 1) for i, a in enumerate(full_areas)]
            if mask.sum() >= 16 and all(v >= min_visible for v in visible):
                break
        else:
            continue
        colour = _contrasting_colour(rng, np.asarray(img)[mask].mean(axis=0))
        _draw(draw, label, cx, cy, r, angle, colour)
        label_map = new_map
        full_areas.append(int(mask.sum()))
        labels.append(label)
    instances = [Instance(label, label_map == i) for i, label in enumerate(labels)]
    return np.asarray(img), [inst for inst in instances if inst.mask.any()]


#: The file in a dataset's folder that records how it was generated.
SETTINGS_FILE = 'settings.json'


def _record_settings(root: str, maker: Callable, arguments: dict) -> None:
    """Write ``maker``'s name and arguments (all but ``root``) to ``<root>/settings.json``."""
    settings = dict(generator=maker.__name__, **{k: v for k, v in arguments.items()
                                                 if k != 'root'})
    with open(osp.join(root, SETTINGS_FILE), 'w') as f:
        json.dump(settings, f, indent=1)


def is_current(root: str, maker: Callable) -> bool:
    """Whether ``root`` holds what ``maker`` writes with its default arguments (a folder
    made by another version of the generator, or with other arguments, is not)."""
    expected = dict(generator=maker.__name__, **{
        name: parameter.default for name, parameter in inspect.signature(maker).parameters.items()
        if name != 'root'})
    try:
        with open(osp.join(root, SETTINGS_FILE)) as f:
            return json.load(f) == json.loads(json.dumps(expected))
    except (OSError, ValueError):
        return False


def _save_png(array: np.ndarray, path: str) -> None:
    os.makedirs(osp.dirname(path), exist_ok=True)
    Image.fromarray(array).save(path)


def make_classification_set(root: str, num_train: int = 6000, num_val: int = 600,
                            size: int = 64, seed: int = 0) -> dict[str, int]:
    """Write one-shape images as ``<root>/{train,val}/<class>/<n>.png``.

    Returns:
        The number of images written per split.
    """
    arguments = dict(locals())
    rng = np.random.default_rng(seed)
    counts = {}
    for split, num in (('train', num_train), ('val', num_val)):
        for n in range(num):
            img, instances = render_scene(rng, size, (1, 1), (0.28, 0.45))
            label = CLASSES[instances[0].label]
            _save_png(img, osp.join(root, split, label, f'{n:05d}.png'))
        counts[split] = num
    _record_settings(root, make_classification_set, arguments)
    return counts


def _rle(mask: np.ndarray) -> dict:
    from pycocotools import mask as mask_utils
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return dict(size=list(rle['size']), counts=rle['counts'].decode('ascii'))


def _bbox(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1),
            float(ys.max() - ys.min() + 1)]


def make_scene_set(root: str, num_train: int = 800, num_val: int = 100, size: int = 128,
                   num_objects: tuple[int, int] = (1, 4),
                   radius: tuple[float, float] = (0.14, 0.28), min_visible: float = 0.85,
                   seed: int = 0) -> dict[str, int]:
    """Write multi-shape scenes with COCO instance annotations and mmseg label maps.

    The shapes' circumradii are ``radius`` of the scene's side, and each keeps at least
    ``min_visible`` of its area in view (:func:`render_scene`): a shape's class can be told
    from what is visible of it.

    Returns:
        The number of images written per split.
    """
    arguments = dict(locals())
    rng = np.random.default_rng(seed)
    counts = {}
    for split, num in (('train', num_train), ('val', num_val)):
        images, annotations = [], []
        for n in range(num):
            img, instances = render_scene(rng, size, num_objects, radius, min_visible)
            name = f'{n:05d}.png'
            _save_png(img, osp.join(root, 'images', split, name))
            seg = np.zeros((size, size), dtype=np.uint8)
            for inst in instances:
                seg[inst.mask] = inst.label + 1
                annotations.append(dict(
                    id=len(annotations) + 1, image_id=n + 1, category_id=inst.label + 1,
                    segmentation=_rle(inst.mask), area=float(inst.mask.sum()),
                    bbox=_bbox(inst.mask), iscrowd=0))
            _save_png(seg, osp.join(root, 'masks', split, name))
            images.append(dict(id=n + 1, file_name=name, height=size, width=size))
        coco = dict(images=images, annotations=annotations,
                    categories=[dict(id=i + 1, name=c) for i, c in enumerate(CLASSES)])
        ann_file = osp.join(root, 'annotations', f'instances_{split}.json')
        os.makedirs(osp.dirname(ann_file), exist_ok=True)
        with open(ann_file, 'w') as f:
            json.dump(coco, f)
        counts[split] = num
    _record_settings(root, make_scene_set, arguments)
    return counts
