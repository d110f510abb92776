"""Mixed precision on the feature extractor: the backbone and the neck under autocast, the
heads and the losses in float32 (mmcv's CPU operators, NMS and RoIAlign, take float32 only).

:func:`autocast_features` serves :class:`AutocastFeaturesHook` (``tools/test.py --amp``),
``tools/infer.py --amp`` and :class:`CpuAmpOptimWrapper` (CPU training with ``--amp``,
bfloat16 without loss scaling); see docs/training.md.
"""
from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator

import torch
import torch.nn as nn
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.optim import OptimWrapper
from mmengine.registry import HOOKS, OPTIM_WRAPPERS

#: The parts of an OpenMMLab model that run under autocast.
FEATURE_PARTS = ('backbone', 'neck')
#: The parts already under autocast, and their dtype.
_AUTOCAST: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


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


class _AutocastHooks:
    """A forward pre-hook that enters ``torch.autocast`` and a forward hook that leaves it and
    casts the output to float32 (run even when the forward raises)."""

    def __init__(self, device_type: str, dtype: torch.dtype) -> None:
        self.device_type, self.dtype = device_type, dtype
        self.entered: list = []

    def enter(self, module: nn.Module, args: tuple) -> None:
        context = torch.autocast(self.device_type, dtype=self.dtype)
        context.__enter__()
        self.entered.append(context)

    def leave(self, module: nn.Module, args: tuple, output):
        self.entered.pop().__exit__(None, None, None)
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

    Forward hooks do it: the modules, their state dicts and the model's other parts are
    unchanged. Applying it again to a part is a no-op.

    Args:
        model: A classifier, detector or segmentor (or a model wrapper around one).
        device_type: ``'cpu'`` or ``'cuda'``: where the model runs.
        dtype: The autocast dtype (default: :func:`inference_amp_dtype`).

    Returns:
        The autocast dtype.
    """
    dtype = dtype or inference_amp_dtype(device_type)
    for part in feature_parts(model):
        if part not in _AUTOCAST:
            hooks = _AutocastHooks(device_type, dtype)
            part.register_forward_pre_hook(hooks.enter)
            part.register_forward_hook(hooks.leave, always_call=True)
            _AUTOCAST[part] = dtype
    return dtype


@HOOKS.register_module()
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


@OPTIM_WRAPPERS.register_module()
class CpuAmpOptimWrapper(OptimWrapper):
    """``OptimWrapper`` that trains with the backbone and the neck under CPU autocast.

    Args:
        dtype: The autocast dtype, ``'bfloat16'`` (default) or ``'float16'``, or a
            ``torch.dtype``.
        **kwargs: ``OptimWrapper``'s arguments (``optimizer``, ``clip_grad``, ...).
    """

    def __init__(self, dtype: str | torch.dtype = 'bfloat16', **kwargs) -> None:
        super().__init__(**kwargs)
        self.cast_dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
        if self.cast_dtype not in (torch.bfloat16, torch.float16):
            raise ValueError(f'CpuAmpOptimWrapper autocasts to bfloat16 or float16, got '
                             f'{dtype!r}')

    @contextlib.contextmanager
    def optim_context(self, model: nn.Module) -> Iterator[None]:
        """MMEngine's context (gradient accumulation), with the model's backbone and neck
        under CPU autocast."""
        autocast_features(model, 'cpu', self.cast_dtype)
        with super().optim_context(model):
            yield
