"""``tools/test.py --show-dir DIR``: every test image drawn, for all three toolboxes, into DIR.

The toolboxes' own visualization hooks do the drawing; this only points them at one folder
(``<work dir>/DIR`` for a relative DIR), one file per test image named after it:

* mmdet's ``DetVisualizationHook`` with ``test_out_dir`` (made absolute, so that mmdet does not
  put it under a timestamped folder);
* mmpretrain's ``VisualizationHook`` with ``out_dir`` and ``interval=1`` (its default draws one
  sample in 5000);
* mmseg's ``SegVisualizationHook`` draws into the visualizer's storage backends only, so
  :func:`seg_hook_to_folder` gives it the folder as mmdet's hook has.
"""
from __future__ import annotations

import os
import os.path as osp

from mmengine.config import Config


def seg_hook_to_folder() -> str:
    """Register (once) mmseg's visualization hook drawing into a folder; return its name."""
    import mmcv
    from mmengine import fileio
    from mmseg.engine.hooks import SegVisualizationHook
    from mmseg.registry import HOOKS

    name = 'SegVisualizationToFolderHook'
    if HOOKS.get(name) is not None:
        return name

    @HOOKS.register_module(name=name)
    class SegVisualizationToFolderHook(SegVisualizationHook):
        """mmseg's ``SegVisualizationHook`` that writes each test image to ``out_dir``."""

        def __init__(self, out_dir: str, **kwargs) -> None:
            super().__init__(**kwargs)
            self.out_dir = out_dir

        def after_test_iter(self, runner, batch_idx, data_batch, outputs) -> None:
            os.makedirs(self.out_dir, exist_ok=True)
            for output in outputs:
                img = mmcv.imfrombytes(fileio.get(output.img_path,
                                                  backend_args=self.backend_args),
                                       channel_order='rgb')
                name = osp.basename(output.img_path)
                self._visualizer.add_datasample(
                    name, img, data_sample=output, show=False, step=runner.iter,
                    out_file=osp.join(self.out_dir, osp.splitext(name)[0] + '.png'))

    return name


def enable_visualization(cfg: Config, show_dir: str) -> str:
    """Make the config's test run draw every test image into ``show_dir``.

    Args:
        cfg: A prepared config (its ``work_dir`` is set).
        show_dir: The folder; a relative one lies inside the work dir.

    Returns:
        The absolute folder.

    Raises:
        ValueError: the config has no visualization hook.
    """
    hook = cfg.get('default_hooks', {}).get('visualization')
    if hook is None:
        raise ValueError('--show-dir needs a visualization hook in default_hooks; the config '
                         'has none')
    out_dir = osp.abspath(osp.join(cfg.work_dir, show_dir))
    scope = cfg.get('default_scope')
    if scope == 'mmdet':
        hook.update(draw=True, test_out_dir=out_dir)
    elif scope == 'mmpretrain':
        hook.update(enable=True, out_dir=out_dir, interval=1)
    elif scope == 'mmseg':
        hook.update(type=seg_hook_to_folder(), draw=True, interval=1, out_dir=out_dir)
    else:
        raise ValueError(f'--show-dir supports mmdet, mmseg and mmpretrain configs; this one '
                         f'has default_scope {scope!r}')
    return out_dir
