"""The demo's closing picture: val predictions of all three models, drawn large.

Drawn after training from the saved checkpoints, through the toolboxes' own inferencers
(``ImageClassificationInferencer``, ``DetInferencer``, ``MMSegInferencer``), so it shows
exactly what ``tools/infer.py`` would. The 64x64 and 128x128 images are shown at several
times their size, with labels in print-sized text:

* classification: a few val images with the predicted class and score (green when right,
  red when wrong), each beside its class token's attention in the last block, one map per
  head, as ``tools/analysis_tools/vis_attention.py`` draws it;
* detection: val scenes with the boxes, masks, classes and scores above ``score_thr``;
* segmentation: val scenes with the predicted label map laid over them.

Under the detector's and the segmentor's predictions the scene is drawn faded to light grey,
so that the predicted classes show in the legend's colours alone, whatever the scene's own
colours: the segmentor's classes as solid colour, the detector's masks as strong fills with
outlines of the colour of their boxes.
"""
from __future__ import annotations

import contextlib
import glob
import io
import logging
import os.path as osp
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from cvt_backbone.checkpoint.write import atomic_write_bytes

#: The attention-map tool the classification rows show the output of.
VIS_ATTENTION = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'analysis_tools',
                         'vis_attention.py')

#: Inches per panel: a 128x128 scene is drawn at 2.6 x dpi (260) pixels, about twice its size.
PANEL_INCHES = 2.6
DPI = 100


@dataclass
class DemoModels:
    """The three demo steps' configs and final checkpoints."""
    cls_config: str
    cls_checkpoint: str
    det_config: str
    det_checkpoint: str
    seg_config: str
    seg_checkpoint: str


@contextlib.contextmanager
def quiet_inferencers() -> Iterator[None]:
    """Keep the inferencers' warnings and log lines (about visualizer back-ends and registry
    scopes, none of them the viewer's business) off the demo's terminal."""
    from mmengine.logging import MMLogger

    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            yield
    finally:
        logger.setLevel(level)


def val_images(data_dir: str, per_class: int = 1, scenes: int = 5) -> tuple[list, list]:
    """The first ``per_class`` classification val images of each class, and the first
    ``scenes`` val scenes."""
    classes = sorted(glob.glob(osp.join(data_dir, 'shapes_cls', 'val', '*')))
    cls_images = [path for folder in classes
                  for path in sorted(glob.glob(osp.join(folder, '*.png')))[:per_class]]
    scene_images = sorted(glob.glob(osp.join(data_dir, 'shapes', 'images', 'val', '*.png')))
    return cls_images, scene_images[:scenes]


def _read_rgb(path: str) -> np.ndarray:
    from PIL import Image
    return np.array(Image.open(path).convert('RGB'))


def _palette(meta: dict) -> list[tuple[float, float, float]]:
    return [tuple(c / 255 for c in colour) for colour in meta['palette']]


def _faded(image: np.ndarray) -> np.ndarray:
    """``image`` (``(H, W, 3)`` uint8) as a light grey ``(H, W, 3)`` float image in [0, 1]:
    its shading kept, its colours gone, so that colours drawn over it stand out."""
    grey = image.astype(np.float32).mean(axis=-1, keepdims=True) / 255
    return np.repeat(0.6 + 0.35 * grey, 3, axis=-1)


def attention_picture(models: DemoModels, image: str, out_file: str) -> np.ndarray:
    """The class token's attention in the classifier's last block, each head's map over
    ``image``, as ``tools/analysis_tools/vis_attention.py`` draws it (an RGB array)."""
    command = [sys.executable, VIS_ATTENTION, models.cls_config, models.cls_checkpoint, image,
               '--out', out_file]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f'vis_attention.py failed: {done.stderr.strip()[-500:]}')
    return _read_rgb(out_file)


def draw_classification(fig, axes, models: DemoModels, images: list[str]) -> None:
    """Rows of [image with prediction, the class token's attention of each head]."""
    from mmpretrain.apis import ImageClassificationInferencer

    inferencer = ImageClassificationInferencer(model=models.cls_config,
                                               pretrained=models.cls_checkpoint, device='cpu')
    with tempfile.TemporaryDirectory() as folder:
        for r, (row, path, result) in enumerate(zip(axes, images, inferencer(images))):
            image = _read_rgb(path)
            truth = osp.basename(osp.dirname(path))
            name = result.get('pred_class', str(result['pred_label']))
            row[0].imshow(image, interpolation='nearest')
            row[0].set_title(f'{name} {result["pred_score"]:.0%} (true: {truth})',
                             fontsize=10, color='green' if name == truth else 'red')
            row[0].axis('off')
            grid = row[1].get_gridspec()
            for ax in row[1:]:
                ax.remove()
            maps = fig.add_subplot(grid[r, 1:])
            maps.imshow(attention_picture(models, path, osp.join(folder, f'{r}.png')))
            maps.axis('off')


def draw_detection(axes, models: DemoModels, images: list[str], score_thr: float) -> None:
    """Each scene with its boxes, masks, classes and scores."""
    from matplotlib.patches import Rectangle
    from mmdet.apis import DetInferencer

    inferencer = DetInferencer(model=models.det_config, weights=models.det_checkpoint,
                               device='cpu', show_progress=False)
    meta = inferencer.model.dataset_meta
    colours = _palette(meta)
    samples = inferencer(images, return_datasamples=True)['predictions']
    for ax, path, sample in zip(axes, images, samples):
        overlay = _faded(_read_rgb(path))
        pred = sample.pred_instances
        keep = pred.scores >= score_thr
        masks, labels = pred.masks[keep].numpy(), pred.labels[keep].tolist()
        for mask, label in zip(masks, labels):
            overlay[mask] = 0.3 * overlay[mask] + 0.7 * np.array(colours[label])
        ax.imshow(overlay, interpolation='nearest')
        for mask, label in zip(masks, labels):
            if mask.any():
                ax.contour(mask, levels=[0.5], colors=[colours[label]], linewidths=1.5)
        for box, label, score in zip(pred.bboxes[keep].tolist(), pred.labels[keep].tolist(),
                                     pred.scores[keep].tolist()):
            x0, y0, x1, y1 = box
            ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, linewidth=2,
                                   edgecolor=colours[label]))
            ax.text(x0, y0, f'{meta["classes"][label]} {score:.0%}', fontsize=8,
                    color='white', va='bottom', bbox=dict(facecolor=colours[label], alpha=0.8,
                                                          pad=1, linewidth=0))
        ax.set_title(f'Mask R-CNN: {int(keep.sum())} objects', fontsize=10)
        ax.axis('off')


def draw_segmentation(axes, models: DemoModels, images: list[str]) -> None:
    """Each scene with the predicted label map laid over it, and a legend."""
    from matplotlib.patches import Patch
    from mmseg.apis import MMSegInferencer

    inferencer = MMSegInferencer(model=models.seg_config, weights=models.seg_checkpoint,
                                 device='cpu')
    inferencer.show_progress = False   # its constructor takes no such argument
    meta = inferencer.model.dataset_meta
    colours = np.array(_palette(meta))
    predictions = inferencer(images)['predictions']
    if len(images) == 1:  # one image gives its map, not a list of one
        predictions = [predictions]
    for ax, path, labels in zip(axes, images, predictions):
        image = _faded(_read_rgb(path))
        shapes = labels > 0   # the background class shows the faded scene
        image[shapes] = colours[labels[shapes]]
        ax.imshow(image, interpolation='nearest')
        ax.set_title('UperNet', fontsize=10)
        ax.axis('off')
    axes[-1].legend(handles=[Patch(color=colours[i], label=name)
                             for i, name in enumerate(meta['classes']) if i],
                    loc='lower right', fontsize=8, framealpha=0.8)


def draw_demo_picture(models: DemoModels, data_dir: str, out_file: str,
                      score_thr: float = 0.5, columns: int = 5) -> str:
    """Draw the picture (classification rows, a detection row, a segmentation row).

    Args:
        models: The configs and checkpoints.
        data_dir: The folder holding ``shapes_cls`` and ``shapes``.
        out_file: The PNG to write (atomically).
        score_thr: Smallest score of a drawn detection.
        columns: Panels per row (the classifier's: its image and up to ``columns - 1``
            heads).

    Returns:
        ``out_file``.
    """
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    cls_images, scenes = val_images(data_dir, scenes=columns)
    rows = len(cls_images) + 2
    fig, axes = plt.subplots(rows, columns, squeeze=False,
                             figsize=(PANEL_INCHES * columns, PANEL_INCHES * rows + 0.6))
    with quiet_inferencers():
        draw_classification(fig, axes[:len(cls_images)], models, cls_images)
        draw_detection(axes[-2], models, scenes, score_thr)
        draw_segmentation(axes[-1], models, scenes)
    for ax in axes[-2:].flat[len(scenes):]:
        ax.axis('off')
    fig.suptitle('Demo val predictions: classifier (with its class token\'s attention per '
                 'head), Mask R-CNN, UperNet', fontsize=12)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format='png', dpi=DPI)
    plt.close(fig)
    atomic_write_bytes(buffer.getvalue(), out_file)
    return out_file
