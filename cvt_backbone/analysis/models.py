"""The models that the analysis tools measure, built one way each.

* :func:`build_preset`: this package's :class:`~cvt_backbone.CvT` from a preset name.
* :func:`build_swin_tiny`: mmdet's Swin-T backbone, the usual alternative for detection.
* :func:`build_config_model`: the model of an mmpretrain / mmdet / mmseg config;
  :func:`build_from_config` wraps it in :class:`TensorModeForward` so that one call runs
  backbone, neck and heads.
* :func:`load_model_weights`: a whole-model checkpoint into such a model, safely and
  completely.
"""
from __future__ import annotations

import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmengine.utils import import_modules_from_strings

from cvt_backbone import REGISTRIES, CvT
from cvt_backbone.checkpoint import read_checkpoint, unwrap_state_dict
from cvt_backbone.engine import check_checkpoint_fits

#: Default ``(H, W)`` input per toolbox, as their get_flops tools assume.
DEFAULT_SHAPES = {'mmpretrain': (224, 224), 'mmdet': (800, 1344), 'mmseg': (512, 512)}


def build_preset(arch: str, **kwargs) -> CvT:
    """This package's CvT backbone from a preset name, in eval mode.

    Args:
        arch: ``'cvt-13'``, ``'cvt-21'`` or ``'cvt-w24'``.
        **kwargs: Further :class:`~cvt_backbone.CvT` arguments (``kv_strides``, ...).

    Returns:
        The model with the official initialisation.
    """
    model = CvT(arch=arch, **kwargs)
    model.init_weights()
    return model.eval()


def build_swin_tiny(with_cp: bool = False) -> nn.Module:
    """mmdet's ``SwinTransformer`` with its default (Swin-T) settings, in eval mode.

    Args:
        with_cp: Activation checkpointing.
    """
    from mmdet.models.backbones import SwinTransformer

    model = SwinTransformer(with_cp=with_cp)
    model.init_weights()
    model.eval()  # its train() returns None: no chaining
    return model


class TensorModeForward(nn.Module):
    """Run an OpenMMLab model's ``mode='tensor'`` forward: backbone, neck and heads.

    This is the forward that the toolboxes' get_flops tools count (``_forward`` of mmdet
    detectors and mmseg segmentors, ``extract_feat`` plus the head for mmpretrain), without
    losses or post-processing beyond what the heads do themselves.

    Args:
        model: A detector, segmentor or classifier.
        data_samples: Data samples with image meta information (one per image), or None.
    """

    def __init__(self, model: nn.Module, data_samples: list | None) -> None:
        super().__init__()
        self.model = model
        self.data_samples = data_samples

    def forward(self, inputs: torch.Tensor):
        """Images ``(B, 3, H, W)`` -> the raw outputs of the model's heads."""
        return self.model(inputs, self.data_samples, mode='tensor')


def _data_samples(scope: str, batch: int, shape: tuple[int, int]) -> list | None:
    """Data samples carrying the meta information heads read (image and padding shapes)."""
    meta = dict(img_shape=shape, ori_shape=shape, pad_shape=shape, batch_input_shape=shape,
                scale_factor=(1., 1.))
    if scope == 'mmdet':
        from mmdet.structures import DetDataSample
        return [DetDataSample(metainfo=meta) for _ in range(batch)]
    if scope == 'mmseg':
        from mmseg.structures import SegDataSample
        return [SegDataSample(metainfo=meta) for _ in range(batch)]
    return None


def build_from_config(path: str, shape: tuple[int, int] | None = None, batch: int = 1
                      ) -> tuple[TensorModeForward, torch.Tensor, str]:
    """Build the model of an mmpretrain / mmdet / mmseg config and an input for it.

    The toolbox is the config's ``default_scope``; its ``custom_imports`` are imported.
    Weights keep their construction-time values (no ``init_weights``: counting needs no
    checkpoint).

    Args:
        path: Config file.
        shape: Input ``(H, W)``; default: :data:`DEFAULT_SHAPES` of the toolbox.
        batch: Images per batch.

    Returns:
        The model (eval mode) wrapped in :class:`TensorModeForward`, a random input
        ``(batch, 3, H, W)`` and the toolbox name.

    Raises:
        ValueError: The config's ``default_scope`` is not one of the three toolboxes.
    """
    model, scope = build_config_model(path)
    shape = tuple(shape or DEFAULT_SHAPES[scope])
    wrapped = TensorModeForward(model, _data_samples(scope, batch, shape))
    return wrapped, torch.randn(batch, 3, *shape), scope


def build_config_model(path: str) -> tuple[nn.Module, str]:
    """The model of an mmpretrain / mmdet / mmseg config, in eval mode, and its toolbox.

    The toolbox is the config's ``default_scope``; its ``custom_imports`` are imported.
    A top-level ``data_preprocessor`` goes into the model, as MMEngine's Runner puts it.
    Weights keep their construction-time values (no ``init_weights``, which would load the
    config's pretrained backbone).

    Raises:
        ValueError: The config's ``default_scope`` is not one of the three toolboxes.
    """
    cfg = Config.fromfile(path)
    if cfg.get('custom_imports'):
        import_modules_from_strings(**cfg.custom_imports)
    scope = cfg.get('default_scope')
    if scope not in REGISTRIES:
        raise ValueError(f'{path}: default_scope is {scope!r}; expected one of '
                         f'{sorted(REGISTRIES)} (set it, or inherit a toolbox runtime config)')
    if cfg.get('data_preprocessor'):  # a top-level one goes into the model, as the Runner does
        cfg.model.setdefault('data_preprocessor', cfg.data_preprocessor)
    with DefaultScope.overwrite_default_scope(scope):
        model = REGISTRIES[scope].build(cfg.model)
    return model.eval(), scope


def load_model_weights(model: nn.Module, path: str) -> None:
    """Load a whole-model checkpoint (``tools/train.py``'s) into ``model``, completely.

    Read with this package's safe reader; keys the model lacks are ignored, as MMEngine does.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointError: it cannot be read safely, or leaves weights of the model unloaded.
    """
    label = f'checkpoint {path!r}'
    checkpoint = read_checkpoint(path)
    check_checkpoint_fits(model, checkpoint, label)
    model.load_state_dict(unwrap_state_dict(checkpoint, label), strict=False)
