"""The toolboxes' own inferencers as ``tools/infer.py`` builds and runs them.

* The model's weights are checked before anything is predicted: a checkpoint that leaves
  weights of the config's model unloaded (a classifier's checkpoint for a detector) is
  refused with the missing keys named (:func:`~cvt_backbone.checkpoint.check_checkpoint_fits`),
  where the inferencers would only warn and predict from random heads.
* Class names and palette: the checkpoint's ``meta.dataset_meta`` when it has a valid one,
  else the config's test dataset's (mmdet's ``DetInferencer`` and mmseg's
  ``MMSegInferencer`` would fall back to COCO's and Cityscapes' names).
* Every output is named after its image's path relative to the input root
  (:func:`output_name`), so ``cat/0.jpg`` and ``dog/0.jpg`` give two pictures and two
  prediction files.
"""
from __future__ import annotations

import copy
import json
import os.path as osp
from collections.abc import Callable, Mapping

import numpy as np
from mmengine.config import Config
from mmengine.registry import DATASETS, DefaultScope

from cvt_backbone import CheckpointError
from cvt_backbone.apis import init_model
from cvt_backbone.checkpoint import MMENGINE_WRAPPER, check_checkpoint_fits
from cvt_backbone.checkpoint.loading import check_dataset_meta, predicted_classes
from cvt_backbone.checkpoint.write import atomic_write_bytes, atomic_write_text
from cvt_backbone.training import autocast_features

#: Where a config's datasets are, in the order their metainfo is taken.
SPLITS = ('test_dataloader', 'val_dataloader', 'train_dataloader')


def output_name(image: str, root: str, suffix: str) -> str:
    """The name of an image's output: its path relative to ``root``, with ``suffix``
    in place of its own (``cat/0.jpg`` -> ``cat/0.png``). An image outside ``root`` (a
    dataset may list ``../x.jpg`` or an absolute path) is named by its absolute path under
    ``_outside/``: no output name leads out of the folder it is joined to."""
    relative = osp.relpath(image, root) if root else osp.basename(image)
    if relative == osp.pardir or relative.startswith(osp.pardir + osp.sep):
        relative = osp.join('_outside', osp.abspath(image).lstrip(osp.sep))
    return osp.splitext(relative)[0] + suffix


def _leaf_dataset(dataset: Mapping) -> dict:
    """The dataset a wrapper config (``SeededDataset``, ``RepeatDataset``...) wraps."""
    while isinstance(dataset.get('dataset'), Mapping):
        dataset = dataset['dataset']
    return copy.deepcopy(dict(dataset))


def config_dataset_meta(cfg: Config, scope: str) -> dict:
    """The metainfo (``classes``, ``palette``, ...) of a config's first dataset in
    :data:`SPLITS`, built without reading any data (``lazy_init``); ``{}`` without one."""
    for split in SPLITS:
        loader = cfg.get(split)
        if loader and loader.get('dataset'):
            dataset = _leaf_dataset(loader['dataset'])
            dataset['lazy_init'] = True
            with DefaultScope.overwrite_default_scope(scope):
                return dict(DATASETS.build(dataset).metainfo)
    return {}


def checked_checkpoint(model, checkpoint: object, cfg: Config, source: str,
                       scope: str) -> dict:
    """A checkpoint the model's weights are checked against, with a valid
    ``meta.dataset_meta``: its own, else the config's (:func:`config_dataset_meta`).

    Raises:
        CheckpointError: the checkpoint leaves weights of the model unloaded, or carries a
            malformed ``dataset_meta``, or the class names are fewer than the model predicts.
    """
    label = f'checkpoint {source!r}'
    check_checkpoint_fits(model, checkpoint, label, MMENGINE_WRAPPER)  # as MMEngine loads
    meta = checkpoint.get('meta') if isinstance(checkpoint, Mapping) else None
    meta = dict(meta) if isinstance(meta, Mapping) else {}
    if meta.get('dataset_meta') is not None:
        check_dataset_meta(meta['dataset_meta'], label, predicted_classes(model))
    else:
        meta['dataset_meta'] = config_dataset_meta(cfg, scope)
    return {**checkpoint, 'meta': meta}


def _checked(base: type, source: str, scope: str) -> type:
    """``base`` (an MMEngine inferencer class) whose weights are checked (see above)."""

    class Checked(base):
        def _load_weights_to_model(self, model, checkpoint, cfg) -> None:
            if checkpoint is None:
                raise CheckpointError(f'no checkpoint was read from {source!r}')
            super()._load_weights_to_model(
                model, checked_checkpoint(model, checkpoint, cfg, source, scope), cfg)

    Checked.__name__ = Checked.__qualname__ = f'Checked{base.__name__}'
    return Checked


def _write_image(rgb: np.ndarray, path: str) -> None:
    """An RGB picture as a PNG file (its folders made as needed)."""
    atomic_write_bytes(_png_bytes(rgb[..., ::-1]), path)


def _png_bytes(bgr: np.ndarray) -> bytes:
    import cv2
    ok, encoded = cv2.imencode('.png', np.ascontiguousarray(bgr))
    if not ok:
        raise OSError('the picture could not be encoded as PNG')
    return encoded.tobytes()


def _json_ready(value):
    if hasattr(value, 'tolist'):
        return value.tolist()
    if isinstance(value, Mapping):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    return value


def infer_mmdet(cfg: Config, checkpoint: str, images: list[str], root: str, out_dir: str,
                device: str, amp: bool, score_thr: float) -> list[str]:
    """Detect with ``DetInferencer``; write ``vis/<name>.png`` and ``preds/<name>.json``."""
    from mmdet.apis import DetInferencer

    inferencer = _checked(DetInferencer, checkpoint, 'mmdet')(
        model=cfg, weights=checkpoint, device=device, show_progress=False)
    if amp:
        autocast_features(inferencer.model, device.split(':')[0])
    classes = inferencer.model.dataset_meta['classes']
    lines = []
    for image in images:
        result = inferencer(image, return_vis=True, no_save_vis=True, no_save_pred=True,
                            pred_score_thr=score_thr)
        pred = result['predictions'][0]
        _write_image(result['visualization'][0],
                     osp.join(out_dir, 'vis', output_name(image, root, '.png')))
        atomic_write_text(json.dumps(_json_ready(pred)) + '\n',
                          osp.join(out_dir, 'preds', output_name(image, root, '.json')))
        kept = [classes[label] for label, score in zip(pred['labels'], pred['scores'])
                if score >= score_thr]
        lines.append(f'{output_name(image, root, osp.splitext(image)[1])}: {len(kept)} '
                     f'objects' + (f' ({", ".join(sorted(set(kept)))})' if kept else ''))
    return lines


def infer_mmseg(cfg: Config, checkpoint: str, images: list[str], root: str, out_dir: str,
                device: str, amp: bool, score_thr: float) -> list[str]:
    """Segment with ``MMSegInferencer``; write ``vis/<name>.png`` and the label maps
    ``pred/<name>.png``."""
    from mmseg.apis import MMSegInferencer

    inferencer = _checked(MMSegInferencer, checkpoint, 'mmseg')(
        model=cfg, weights=checkpoint, device=device)
    inferencer.show_progress = False  # one line per image (it takes no show_progress)
    if amp:
        autocast_features(inferencer.model, device.split(':')[0])
    classes = inferencer.model.dataset_meta['classes']
    lines = []
    for image in images:
        result = inferencer(image, return_vis=True)
        labels = np.asarray(result['predictions']).astype(np.uint8)
        _write_image(result['visualization'][0],
                     osp.join(out_dir, 'vis', output_name(image, root, '.png')))
        atomic_write_bytes(_png_bytes(labels),
                           osp.join(out_dir, 'pred', output_name(image, root, '.png')))
        lines.append(f'{output_name(image, root, osp.splitext(image)[1])}: '
                     + ', '.join(classes[i] for i in np.unique(labels)))
    return lines


def infer_mmpretrain(cfg: Config, checkpoint: str, images: list[str], root: str,
                     out_dir: str, device: str, amp: bool, score_thr: float) -> list[str]:
    """Classify with ``ImageClassificationInferencer``; write ``vis/<name>.png`` and
    ``preds/<name>.json``."""
    import mmcv
    from mmpretrain.apis import ImageClassificationInferencer
    from mmpretrain.utils import progress
    from mmpretrain.visualization import UniversalVisualizer

    # One line per image, as DetInferencer(show_progress=False): mmpretrain's progress bar
    # ends without a newline where stdout is no terminal, and the first line ran into it.
    progress.disable_progress_bar = True

    model = init_model(cfg, checkpoint, device)
    if not getattr(model, 'dataset_meta', None):
        model.dataset_meta = config_dataset_meta(cfg, 'mmpretrain')
    # what mmpretrain's get_model sets: the inferencer's class names and pipeline
    model._dataset_meta, model._config = model.dataset_meta, cfg
    if amp:
        autocast_features(model, device.split(':')[0])
    inferencer = ImageClassificationInferencer(model=model, pretrained=False, device=device)
    visualizer = UniversalVisualizer()
    lines = []
    for image in images:
        samples = inferencer(image, return_datasamples=True)
        result = inferencer.postprocess(samples, None)[0]
        picture = mmcv.imread(image)[..., ::-1]
        visualizer.visualize_cls(picture, samples[0], classes=inferencer.classes,
                                 draw_gt=False, draw_pred=True, draw_score=True)
        _write_image(visualizer.get_image(),
                     osp.join(out_dir, 'vis', output_name(image, root, '.png')))
        atomic_write_text(json.dumps(_json_ready(result)) + '\n',
                          osp.join(out_dir, 'preds', output_name(image, root, '.json')))
        label = result.get('pred_class', result['pred_label'])
        lines.append(f'{output_name(image, root, osp.splitext(image)[1])}: {label} '
                     f'({result["pred_score"]:.3f})')
    return lines


#: The inferencer of each toolbox, and the folder its predictions go to.
INFERENCERS: dict[str, tuple[Callable[..., list[str]], str]] = {
    'mmdet': (infer_mmdet, 'preds'), 'mmseg': (infer_mmseg, 'pred'),
    'mmpretrain': (infer_mmpretrain, 'preds')}
