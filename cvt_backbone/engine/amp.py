"""Mixed precision of whole models on the feature extractor: the backbone and the neck
under autocast, the heads and the losses in float32.

The backbone and the neck hold nearly all of a model's arithmetic and run correctly in
bfloat16. The heads do not all: mmcv's CPU operators (NMS, RoIAlign) take float32 only,
and post-processing compares scores and coordinates that bfloat16 rounds to 3 significant
digits. :func:`autocast_features` runs the backbone and the neck of a model under
``torch.autocast`` and hands float32 maps to the heads. Users of it:
:class:`AutocastFeaturesHook` (``tools/test.py --amp``), ``tools/infer.py --amp`` and CPU
training with ``--amp`` (:class:`~.optim.CpuAmpOptimWrapper`). Parameters stay float32.
"""
from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn as nn
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

#: The parts of an OpenMMLab model that run under autocast.
FEATURE_PARTS = ('backbone', 'neck')


def inference_amp_dtype(device_type: str) -> torch.dtype:
    """The autocast dtype of mixed-precision inference on a device type (``'cpu'``,
    ``'cuda'``): bfloat16 on the CPU and on GPUs that support it, else float16."""
    if device_type == 'cuda' and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


def _to_float32(value):
    """Floating tensors in ``value`` (a tensor, or tuples and lists of them) as float32."""
    if isinstance(value, torch.Tensor):
        return value.float() if value.is_floating_point() else value
    if isinstance(value, (tuple, list)):
        return type(value)(_to_float32(v) for v in value)
    return value


def _autocast_forward(forward: Callable, device_type: str, dtype: torch.dtype, *args,
                      **kwargs):
    with torch.autocast(device_type, dtype=dtype):
        output = forward(*args, **kwargs)
    return _to_float32(output)


def feature_parts(model: nn.Module) -> list[nn.Module]:
    """``model.backbone`` and ``model.neck`` where present; a model with neither (a bare
    backbone) is its own feature extractor."""
    if is_model_wrapper(model):
        model = model.module
    parts = [getattr(model, name) for name in FEATURE_PARTS
             if isinstance(getattr(model, name, None), nn.Module)]
    return parts or [model]


def autocast_features(model: nn.Module, device_type: str,
                      dtype: torch.dtype | None = None) -> torch.dtype:
    """Run the feature parts of ``model`` (:func:`feature_parts`) under autocast, their
    floating outputs cast back to float32.

    Each part's ``forward`` is wrapped on the instance: its state dict, hooks and the
    model's other parts are unchanged. Applying it again is a no-op.

    Args:
        model: A classifier, detector or segmentor (or a model wrapper around one).
        device_type: ``'cpu'`` or ``'cuda'``: where the model runs.
        dtype: The autocast dtype (default: :func:`inference_amp_dtype`).

    Returns:
        The autocast dtype.
    """
    dtype = dtype or inference_amp_dtype(device_type)
    for part in feature_parts(model):
        if not getattr(part.forward, 'autocast_dtype', None):
            wrapped = functools.partial(_autocast_forward, part.forward, device_type, dtype)
            wrapped.autocast_dtype = dtype
            part.forward = wrapped
    return dtype


class AutocastFeaturesHook(Hook):
    """Run the backbone and the neck of the Runner's model under autocast when it tests
    or validates (:func:`autocast_features`)."""

    priority = 'VERY_HIGH'

    def _apply(self, runner) -> None:
        device = next(runner.model.parameters()).device
        dtype = autocast_features(runner.model, device.type)
        runner.logger.info(f'backbone and neck under {str(dtype).split(".")[-1]} autocast, '
                           f'heads in float32')

    def before_test(self, runner) -> None:
        self._apply(runner)

    def before_val(self, runner) -> None:
        self._apply(runner)
