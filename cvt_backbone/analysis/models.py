"""The models that the analysis tools measure, built one way each.

* :func:`build_preset`: this package's :class:`~cvt_backbone.CvT` from a preset name.
* :func:`build_transformers_port`: the transformers port (``CvtModel``) with the same
  architecture and the same weights as a given :class:`~cvt_backbone.CvT`
  (:func:`cvt_to_transformers` maps the state dict).
* :func:`build_swin_tiny`: mmdet's Swin-T backbone, the usual alternative for detection.
* :func:`build_from_config`: the model of an mmpretrain / mmdet / mmseg config, wrapped in
  :class:`TensorModeForward` so that one call runs backbone, neck and heads.
"""
from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Mapping

import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmengine.utils import import_modules_from_strings

from ..models import CvT, QuickGELU
from ..registration import REGISTRIES

#: Default ``(H, W)`` input per toolbox, as their get_flops tools assume.
DEFAULT_SHAPES = {'mmpretrain': (224, 224), 'mmdet': (800, 1344), 'mmseg': (512, 512)}

_TO_TRANSFORMERS = (
    (r'^stages\.(\d+)\.patch_embed\.projection\.',
     r'encoder.stages.\1.embedding.convolution_embeddings.projection.'),
    (r'^stages\.(\d+)\.patch_embed\.norm\.',
     r'encoder.stages.\1.embedding.convolution_embeddings.normalization.'),
    (r'^stages\.(\d+)\.cls_token$', r'encoder.stages.\1.cls_token'),
    (r'^stages\.(\d+)\.blocks\.(\d+)\.', r'encoder.stages.\1.layers.\2.'),
    (r'attn\.conv_proj\.q\.', 'attention.attention.convolution_projection_query.'),
    (r'attn\.conv_proj\.k\.', 'attention.attention.convolution_projection_key.'),
    (r'attn\.conv_proj\.v\.', 'attention.attention.convolution_projection_value.'),
    (r'(convolution_projection_\w+\.)conv\.', r'\1convolution_projection.convolution.'),
    (r'(convolution_projection_\w+\.)bn\.', r'\1convolution_projection.normalization.'),
    (r'attn\.proj_q\.', 'attention.attention.projection_query.'),
    (r'attn\.proj_k\.', 'attention.attention.projection_key.'),
    (r'attn\.proj_v\.', 'attention.attention.projection_value.'),
    (r'attn\.proj\.', 'attention.output.dense.'),
    (r'mlp\.fc1\.', 'intermediate.dense.'),
    (r'mlp\.fc2\.', 'output.dense.'),
    (r'norm1\.', 'layernorm_before.'),
    (r'norm2\.', 'layernorm_after.'),
)
# Output norms (norm0..2) and the class-token norm have no counterpart in ``CvtModel``.
_NOT_IN_TRANSFORMERS = re.compile(r'^(norm\d+|cls_norm)\.')


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


def cvt_to_transformers(state_dict: Mapping[str, torch.Tensor]) -> OrderedDict:
    """Rename a :class:`~cvt_backbone.CvT` state dict to the keys of transformers' ``CvtModel``.

    Args:
        state_dict: Our state dict (``stages.{i}.blocks.{j}.attn.conv_proj.q.conv.weight``...).

    Returns:
        The state dict with ``CvtModel`` keys (tensors shared, not copied); the per-stage
        output norms and the class-token norm, which ``CvtModel`` lacks, are left out.
    """
    converted = OrderedDict()
    for key, value in state_dict.items():
        if _NOT_IN_TRANSFORMERS.match(key):
            continue
        for pattern, replacement in _TO_TRANSFORMERS:
            key = re.sub(pattern, replacement, key)
        converted[key] = value
    return converted


def build_transformers_port(model: CvT) -> nn.Module:
    """transformers' ``CvtModel`` with the architecture and the weights of ``model``.

    The port uses the exact GELU; where ``model`` uses QuickGELU (the official activation)
    it is swapped in, so that both compute the same function.

    Args:
        model: A CvT with the preset stem and projections (kernel 3, padding 1, q stride 1).

    Returns:
        The port, in eval mode.

    Raises:
        ValueError: A stage ``i`` has ``i`` blocks or fewer: the port indexes its per-block
            stochastic-depth rates by the stage number and cannot be built (no preset is
            affected).
    """
    from transformers import CvtConfig, CvtModel

    arch = model.arch
    n = model.num_stages
    if any(depth <= i for i, depth in enumerate(arch['depths'])):
        raise ValueError(f'transformers\' CvtModel needs more than i blocks in stage i; '
                         f'depths {arch["depths"]} cannot be ported')
    config = CvtConfig(
        embed_dim=arch['embed_dims'], depth=arch['depths'], num_heads=arch['num_heads'],
        patch_sizes=arch['patch_sizes'], patch_stride=arch['patch_strides'],
        patch_padding=arch['patch_paddings'], stride_kv=arch['kv_strides'],
        cls_token=arch['cls_token'], mlp_ratio=[float(arch['mlp_ratio'])] * n,
        drop_path_rate=[0.] * n, qkv_projection_method=['dw_bn'] * n,
        kernel_qkv=[3] * n, padding_kv=[1] * n, stride_q=[1] * n, padding_q=[1] * n,
        num_channels=model.in_channels)
    port = CvtModel(config, add_pooling_layer=False)
    port.load_state_dict(cvt_to_transformers(model.state_dict()))
    if isinstance(model.stages[0].blocks[0].mlp.act, QuickGELU):
        for module in port.modules():
            if type(module).__name__ == 'CvtIntermediate':
                module.activation = QuickGELU()
    return port.eval()


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
    cfg = Config.fromfile(path)
    if cfg.get('custom_imports'):
        import_modules_from_strings(**cfg.custom_imports)
    scope = cfg.get('default_scope')
    if scope not in REGISTRIES:
        raise ValueError(f'{path}: default_scope is {scope!r}; expected one of '
                         f'{sorted(REGISTRIES)} (set it, or inherit a toolbox runtime config)')
    shape = tuple(shape or DEFAULT_SHAPES[scope])
    with DefaultScope.overwrite_default_scope(scope):
        model = REGISTRIES[scope].build(cfg.model)
    model.eval()
    wrapped = TensorModeForward(model, _data_samples(scope, batch, shape))
    return wrapped, torch.randn(batch, 3, *shape), scope
