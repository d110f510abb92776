"""``tools/test.py --show-dir DIR``: every test image drawn with its predictions into DIR.

:class:`DrawTestImagesHook` takes the place of the config's visualization hook for the test
run: it draws each test image with the toolbox's own visualizer (mmdet's and mmseg's
``add_datasample``, mmpretrain's ``visualize_cls``) into one file per image, named after the
image's path relative to the test dataset's image folder (``val/cat/0.jpg`` ->
``DIR/cat/0.png``), so images of one name in different folders never overwrite each other.
"""
from __future__ import annotations

import inspect
import os.path as osp
from collections.abc import Mapping

import mmcv
from mmengine import fileio
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from cvt_backbone import ConfigError
from inferencers import output_name


@HOOKS.register_module()
class DrawTestImagesHook(Hook):
    """Draw every test image with its predictions into ``out_dir``.

    Args:
        out_dir: The folder.
        image_root: Output names are image paths relative to it.
        score_thr: mmdet: draw boxes scoring at least this.
    """

    def __init__(self, out_dir: str, image_root: str = '', score_thr: float = 0.3) -> None:
        self.out_dir, self.image_root, self.score_thr = out_dir, image_root, score_thr

    def after_test_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        visualizer = runner.visualizer
        for sample in outputs or []:
            path = sample.img_path
            image = mmcv.imfrombytes(fileio.get(path), channel_order='rgb')
            out_file = osp.join(self.out_dir, output_name(path, self.image_root, '.png'))
            if hasattr(visualizer, 'visualize_cls'):  # mmpretrain
                visualizer.visualize_cls(
                    image, sample, classes=visualizer.dataset_meta.get('classes'),
                    draw_gt=False, out_file=out_file, name=osp.basename(path))
                continue
            extra = {'pred_score_thr': self.score_thr} if 'pred_score_thr' in \
                inspect.signature(visualizer.add_datasample).parameters else {}
            visualizer.add_datasample(osp.basename(path), image, data_sample=sample,
                                      draw_gt=False, show=False, out_file=out_file, **extra)


def image_root(cfg: Config) -> str:
    """The folder of a config's test images: its dataset's ``data_root`` joined with its
    image prefix (``data_prefix.img``, ``data_prefix.img_path`` or a str prefix)."""
    dataset = cfg.test_dataloader.dataset
    while isinstance(dataset.get('dataset'), Mapping):
        dataset = dataset['dataset']
    prefix = dataset.get('data_prefix') or ''
    if isinstance(prefix, Mapping):
        prefix = prefix.get('img') or prefix.get('img_path') or ''
    return osp.join(dataset.get('data_root') or '', prefix)


def enable_visualization(cfg: Config, show_dir: str) -> str:
    """Make the config's test run draw every test image into ``show_dir``.

    Args:
        cfg: A prepared config (its ``work_dir`` is set).
        show_dir: The folder; a relative one lies inside the work dir.

    Returns:
        The absolute folder.

    Raises:
        ConfigError: the config has no test dataloader.
    """
    if not cfg.get('test_dataloader'):
        raise ConfigError('--show-dir: the config has no test_dataloader')
    out_dir = osp.abspath(osp.join(cfg.work_dir, show_dir))
    cfg.setdefault('default_hooks', {})['visualization'] = dict(
        type='DrawTestImagesHook', out_dir=out_dir, image_root=image_root(cfg))
    return out_dir
