"""Mixed precision where MMEngine's ``AmpOptimWrapper`` cannot serve: on the CPU.

MMEngine's ``AmpOptimWrapper`` asserts a GPU (or NPU, MLU, MUSA) when it is built and scales
the loss for float16. On the CPU, autocast runs in bfloat16, which has float32's exponent
range and needs no loss scaling: :class:`CpuAmpOptimWrapper` is MMEngine's plain
``OptimWrapper`` whose optimisation context runs the model's backbone and neck under
``torch.autocast('cpu', bfloat16)`` (:func:`~.amp.autocast_features`): the heads and losses
stay float32, as mmcv's CPU operators (RoIAlign, NMS) need. Parameters, gradients and the
optimizer state stay float32.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn as nn
from mmengine.optim import OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS

from .amp import autocast_features


@OPTIM_WRAPPERS.register_module()
class CpuAmpOptimWrapper(OptimWrapper):
    """``OptimWrapper`` that trains under CPU autocast (bfloat16 by default).

    Args:
        dtype: The autocast dtype, ``'bfloat16'`` (default) or a ``torch.dtype``.
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
