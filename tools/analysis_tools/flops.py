"""Parameter and FLOP counts with the attention matmuls included.

MMEngine's :class:`~mmengine.analysis.FlopAnalyzer` traces the model and counts, per
operator, one multiply-add as one "flop" (it counts multiply-accumulates, MACs). It has no
handle for ``scaled_dot_product_attention`` and counts it as 0, which hides most of the cost
of attention at detection resolutions (465 of CvT-13's 638 GFLOP at 800x1344).
:func:`attention_flop_jit` counts its two matmuls, ``q @ k^T`` and ``softmax(.) @ v``.

Reported figures follow the usual hardware convention, ``FLOPs = 2 x MACs``, and the MACs
are given alongside.
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn
from mmengine.analysis import FlopAnalyzer
from mmengine.analysis.jit_handles import get_shape
from mmengine.config import Config

from cvt_backbone.apis import DEFAULT_SHAPES, build_model, load_config

#: The traced names of scaled dot-product attention: the public op and the fused kernels
#: that PyTorch dispatches it to (their first three inputs are query, key and value).
ATTENTION_OPS = (
    'aten::scaled_dot_product_attention',
    'aten::_scaled_dot_product_flash_attention_for_cpu',
    'aten::_scaled_dot_product_flash_attention',
    'aten::_scaled_dot_product_efficient_attention',
    'aten::_scaled_dot_product_cudnn_attention',
)

#: The name under which :func:`count_flops` books the attention matmuls.
ATTENTION_KEY = 'scaled_dot_product_attention'


def attention_flop_jit(inputs: list[Any], outputs: list[Any]) -> int:
    """MACs of one scaled dot-product attention: ``q @ k^T`` plus ``weights @ v``.

    Args:
        inputs: Traced inputs; the first three are query ``(..., N, d)``, key ``(..., M, d)``
            and value ``(..., M, d_v)``, with broadcastable leading (batch, head) dims.
        outputs: Traced outputs (unused).

    Returns:
        ``prod(...) * N * M * (d + d_v)`` multiply-accumulates.
    """
    q_shape, k_shape, v_shape = (get_shape(v) for v in inputs[:3])
    *batch, num_queries, head_dims = q_shape
    num_keys, value_dims = k_shape[-2], v_shape[-1]
    leading = torch.broadcast_shapes(tuple(batch), tuple(k_shape[:-2]), tuple(v_shape[:-2]))
    return math.prod(leading) * num_queries * num_keys * (head_dims + value_dims)


@dataclass
class FlopCount:
    """Complexity of one forward pass.

    Attributes:
        input_shape: Shape of the traced input.
        params: Number of parameters of the model.
        macs: Multiply-accumulates of the forward pass (MMEngine's "flops").
        by_operator: MACs per traced operator.
        unsupported: Operators without a counting handle and how often they ran (elementwise
            operations, mostly; they are not counted).
    """

    input_shape: tuple[int, ...]
    params: int
    macs: int
    by_operator: Counter = field(default_factory=Counter)
    unsupported: Counter = field(default_factory=Counter)

    @property
    def flops(self) -> int:
        """Floating-point operations, ``2 x MACs``."""
        return 2 * self.macs

    @property
    def attention_macs(self) -> int:
        """MACs of the attention matmuls inside ``scaled_dot_product_attention``."""
        return self.by_operator.get(ATTENTION_KEY, 0)

    def summary(self, title: str) -> str:
        """A human-readable report stating the counting convention."""
        lines = [
            title,
            f'Input shape: {tuple(self.input_shape)}',
            f'Parameters: {self.params / 1e6:.2f} M',
            f'FLOPs: {self.flops / 1e9:.2f} G  (GFLOPs = 2 x MACs)',
            f'MACs: {self.macs / 1e9:.2f} G  (multiply-accumulates; MMEngine calls these '
            f'"flops")',
            f'  of which attention matmuls: {2 * self.attention_macs / 1e9:.2f} GFLOP '
            f'({self.attention_macs / 1e9:.2f} GMACs)',
            'Per operator (GFLOP): ' + ', '.join(
                f'{op} {2 * n / 1e9:.2f}' for op, n in self.by_operator.most_common()),
        ]
        if self.unsupported:
            lines.append('Not counted (no FLOP handle): ' + ', '.join(
                f'{op.replace("aten::", "")} x{n}' for op, n in sorted(self.unsupported.items())))
        return '\n'.join(lines)


def count_flops(model: nn.Module, inputs: torch.Tensor | tuple) -> FlopCount:
    """Count the parameters and the MACs of ``model(*inputs)``, attention included.

    The model is traced once without autograd in its current train/eval mode.

    Args:
        model: Any module whose forward takes ``inputs``.
        inputs: A tensor, or a tuple of forward arguments (the first one a tensor).

    Returns:
        The counts.
    """
    inputs = inputs if isinstance(inputs, tuple) else (inputs, )
    analyzer = FlopAnalyzer(model, inputs)
    analyzer.set_op_handle(**{op: attention_flop_jit for op in ATTENTION_OPS})
    analyzer.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    analyzer.tracer_warnings('none')
    with torch.no_grad():
        by_operator = Counter(analyzer.by_operator())
    by_operator = Counter({_short_name(op): n for op, n in by_operator.items()})
    return FlopCount(
        input_shape=tuple(inputs[0].shape),
        params=sum(p.numel() for p in model.parameters()),
        macs=sum(by_operator.values()),
        by_operator=by_operator,
        unsupported=Counter(analyzer.unsupported_ops()))


def _short_name(op: str) -> str:
    """Book every attention variant under one name."""
    return ATTENTION_KEY if op.startswith('_scaled_dot_product') else op


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


def tensor_forward(config: Config | str, shape: tuple[int, int] | None = None,
                   batch: int = 1) -> tuple[TensorModeForward, torch.Tensor, str]:
    """The model of a config in :class:`TensorModeForward`, and a random input for it.

    Args:
        config: A config or its file.
        shape: Input ``(H, W)``; default: the config's own test size where it states one
            (``test_pipeline`` ``Resize``/``scale``), else :data:`cvt_backbone.apis.DEFAULT_SHAPES`.
        batch: Images per batch.

    Returns:
        The wrapped model (eval mode, no weights loaded), an input ``(batch, 3, H, W)``
        and the toolbox name.
    """
    cfg = load_config(config) if isinstance(config, str) else config
    model, scope = build_model(cfg)
    shape = tuple(shape or config_test_shape(cfg) or DEFAULT_SHAPES[scope])
    wrapped = TensorModeForward(model, _data_samples(scope, batch, shape))
    return wrapped, torch.randn(batch, 3, *shape), scope


def config_test_shape(cfg: Config) -> tuple[int, int] | None:
    """The ``(H, W)`` a config resizes its test images to, where it says so exactly: a
    ``Resize`` to a square ``scale`` (or an ``int``) in its test pipeline; else None."""
    pipeline = cfg.get('test_pipeline') or (cfg.get('test_dataloader') or {}).get(
        'dataset', {}).get('pipeline') or []
    for step in pipeline:
        if isinstance(step, Mapping) and str(step.get('type', '')).split('.')[-1] == 'Resize':
            scale = step.get('scale')
            if isinstance(scale, int):
                return scale, scale
            if isinstance(scale, (list, tuple)) and len(scale) == 2 and scale[0] == scale[1]:
                return int(scale[1]), int(scale[0])
    return None
