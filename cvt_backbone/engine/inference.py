"""Class names for the toolboxes' inferencers when a checkpoint does not carry them.

mmdet's ``DetInferencer`` and mmseg's ``MMSegInferencer`` read the class names and palette
from the checkpoint's ``meta.dataset_meta`` only, and without it fall back to COCO's and
Cityscapes' names: a detector of three shapes would label its boxes "person", "bicycle",
"car", and an ADE20K segmentor its pixels as Cityscapes classes. Checkpoints written by
``tools/train.py`` carry ``dataset_meta``; converted, hand-saved or stripped ones do not.

Importing this module (``import cvt_backbone.engine`` does) makes every MMEngine inferencer
fill a missing ``dataset_meta`` from the config it was given: the metainfo of its test (else
val, else train) dataset, as the toolbox's dataset class and the config's ``metainfo``
define it. A checkpoint's own ``dataset_meta`` always wins.
"""
from __future__ import annotations

import copy

from mmengine.config import Config
from mmengine.infer import BaseInferencer
from mmengine.registry import DATASETS

#: Where a config's datasets are, in the order their metainfo is taken.
SPLITS = ('test_dataloader', 'val_dataloader', 'train_dataloader')


def config_dataset_meta(cfg: Config) -> dict:
    """The metainfo (``classes``, ``palette``, ...) of a config's first dataset in
    :data:`SPLITS`, built without reading any data (``lazy_init``); ``{}`` without one.

    The toolbox's registry scope must be the default scope (the inferencers set it).
    """
    for split in SPLITS:
        loader = cfg.get(split)
        if loader and loader.get('dataset'):
            dataset = copy.deepcopy(loader['dataset'])
            dataset['lazy_init'] = True
            return dict(DATASETS.build(dataset).metainfo)
    return {}


def with_dataset_meta(checkpoint: dict | None, cfg: Config) -> dict | None:
    """``checkpoint`` with ``meta.dataset_meta`` from ``cfg`` when it has none (in place)."""
    if not isinstance(checkpoint, dict):
        return checkpoint
    meta = checkpoint.get('meta')
    meta = meta if isinstance(meta, dict) else {}
    if 'dataset_meta' not in meta and 'CLASSES' not in meta:
        dataset_meta = config_dataset_meta(cfg)
        if dataset_meta:
            checkpoint['meta'] = {**meta, 'dataset_meta': dataset_meta}
    return checkpoint


def _fill_dataset_meta_in_inferencers() -> None:
    original = BaseInferencer._init_model
    if getattr(original, '_cvt_dataset_meta', False):
        return

    def _init_model(self, cfg, weights, device='cpu'):
        # The toolboxes' _load_weights_to_model read the class names; they get the checkpoint
        # with the config's names filled in. An instance attribute shadows the method for
        # this call only.
        load = self._load_weights_to_model

        def load_with_dataset_meta(model, checkpoint, cfg):
            return load(model, with_dataset_meta(checkpoint, cfg), cfg)

        self._load_weights_to_model = load_with_dataset_meta
        try:
            return original(self, cfg, weights, device)
        finally:
            del self._load_weights_to_model

    _init_model._cvt_dataset_meta = True
    _init_model.__doc__ = original.__doc__
    BaseInferencer._init_model = _init_model


_fill_dataset_meta_in_inferencers()
