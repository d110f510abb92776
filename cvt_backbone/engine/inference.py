"""Class names for the toolboxes' inferencers when a checkpoint does not carry them.

mmdet's ``DetInferencer`` and mmseg's ``MMSegInferencer`` read the class names and palette
from the checkpoint's ``meta.dataset_meta`` only, and without it fall back to COCO's and
Cityscapes' names: a detector of three shapes would label its boxes "person", "bicycle",
"car", and an ADE20K segmentor its pixels as Cityscapes classes. Checkpoints written by
``tools/train.py`` carry ``dataset_meta``; converted, hand-saved or stripped ones do not.

Importing this module (``import cvt_backbone.engine`` does) makes every MMEngine inferencer
fill a missing ``dataset_meta`` from the config it was given: the metainfo of its test (else
val, else train) dataset, as the toolbox's dataset class and the config's ``metainfo`` define
it. A checkpoint's own ``dataset_meta`` always wins.

It also builds and runs each inferencer in its own toolbox's registry scope. MMEngine's
inferencers make their scope the process's default scope when they are built, and leave it
so; everything built later looks there first: mmpretrain's inferencer, built after mmseg's,
looked for its ``PackInputs`` transform in mmseg's registry (``KeyError: 'PackInputs is not in
the mmseg::transform registry'``). Now an inferencer's scope holds while it is built and
while it is called, and the default scope is the caller's again afterwards.
"""
from __future__ import annotations

import copy
import functools
import inspect
from collections.abc import Callable

from mmengine.config import Config
from mmengine.infer import BaseInferencer
from mmengine.infer.infer import InferencerMeta
from mmengine.registry import DATASETS, MODELS, DefaultScope

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


def _in_scope(method: Callable, scope_of: Callable[..., str | None]) -> Callable:
    """``method`` run with the default registry scope ``scope_of(*args, **kwargs)``, and
    the caller's default scope restored afterwards (MMEngine's ``overwrite_default_scope``)."""
    if getattr(method, '_cvt_own_scope', False):
        return method

    @functools.wraps(method)
    def in_own_scope(*args, **kwargs):
        with DefaultScope.overwrite_default_scope(scope_of(*args, **kwargs)):
            return method(*args, **kwargs)

    in_own_scope._cvt_own_scope = True
    return in_own_scope


def _toolbox_scope(cls: type) -> str | None:
    """The registry scope of the toolbox that defines ``cls`` (``'mmpretrain'`` for
    ``mmpretrain.apis.ImageClassificationInferencer``), None for a class of no toolbox."""
    package = cls.__module__.split('.')[0]
    return package if package in MODELS.children else None


def _scope_argument(cls: type, *args, **kwargs) -> str | None:
    """The scope an MMEngine inferencer class is being built in: its ``scope`` argument (or
    that argument's default: ``'mmdet'`` for ``DetInferencer``...); for a class that takes
    none, its toolbox's; else the current default scope."""
    scope = None
    try:
        bound = inspect.signature(cls.__init__).bind(None, *args, **kwargs)
        bound.apply_defaults()
        scope = bound.arguments.get('scope')
    except TypeError:  # the constructor itself will say what is wrong
        pass
    scope = scope or _toolbox_scope(cls)
    if scope is None:
        current = DefaultScope.get_current_instance()
        scope = current.scope_name if current is not None else None
    return scope


def _build_and_call_inferencers_in_their_scope() -> None:
    # Built: through the metaclass, as MMEngine's subclasses set the scope in their own
    # __init__ before calling the base class's.
    InferencerMeta.__call__ = _in_scope(InferencerMeta.__call__, _scope_argument)
    BaseInferencer.__call__ = _in_scope(
        BaseInferencer.__call__,
        lambda self, *args, **kwargs: getattr(self, 'scope', None) or _toolbox_scope(type(self)))
    try:  # mmpretrain's inferencers of other tasks have a base class of their own
        from mmpretrain.apis.base import BaseInferencer as PretrainInferencer
    except ImportError:  # mmpretrain is not installed: nothing of it to scope
        return
    PretrainInferencer.__init__ = _in_scope(PretrainInferencer.__init__,
                                            lambda *args, **kwargs: 'mmpretrain')
    PretrainInferencer.__call__ = _in_scope(PretrainInferencer.__call__,
                                            lambda *args, **kwargs: 'mmpretrain')


_build_and_call_inferencers_in_their_scope()
