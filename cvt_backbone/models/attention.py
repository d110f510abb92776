"""CvT's attention in two formulations, and what activation checkpointing needs.

:func:`attention` computes multi-head attention either as the paper writes it,
``softmax(q k^T * scale) v`` with the score matrix in memory (the reference, ``fast=False``,
through :func:`attention_weights`), or through ``F.scaled_dot_product_attention``
(``fast=True``), whose fused kernels never hold the score matrix: at 1344x800 the first stage
of CvT-13 has 67,200 queries over 16,800 keys, a 4.5 GB score matrix per image and head in
float32. Both compute the same function up to float rounding;
:meth:`CvT.use_fast_kernels <cvt_backbone.models.cvt.CvT.use_fast_kernels>` picks one.
:func:`attention_weights` is the one written-out softmax attention of the project: the
attention-map tool and the mmdeploy rewrite use it too.

:func:`keep_bn_statistics` is what activation checkpointing needs: the recomputed forward
must not update the BatchNorm running statistics a second time.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.modules.batchnorm import _BatchNorm


def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """``(B, N, C) -> (B, h, N, C / h)``: channel ``c`` belongs to head ``c // (C / h)``, as in
    the official code."""
    return x.unflatten(-1, (num_heads, -1)).transpose(1, 2)


def attention_weights(q: torch.Tensor, k: torch.Tensor, scale: float,
                      mask: torch.Tensor | None = None) -> torch.Tensor:
    """``softmax(q k^T * scale + mask)`` over the keys.

    Args:
        q: Queries ``(..., N, d)``.
        k: Keys ``(..., M, d)``.
        scale: Logit scale.
        mask: None, a boolean mask (True: attend) or an additive one, broadcastable to
            ``(..., N, M)``.

    Returns:
        ``(..., N, M)``, each row summing to 1.
    """
    logits = q @ k.transpose(-2, -1) * scale
    if mask is not None and mask.dtype == torch.bool:
        logits = logits.masked_fill(~mask, float('-inf'))
    elif mask is not None:
        logits = logits + mask
    return logits.softmax(dim=-1)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_heads: int, scale: float,
              dropout_p: float = 0., fast: bool = True) -> torch.Tensor:
    """Multi-head scaled dot-product attention over tokens.

    Args:
        q: Queries ``(B, N, C)``.
        k: Keys ``(B, M, C)``.
        v: Values ``(B, M, C)``.
        num_heads: Attention heads ``h``; divides ``C``.
        scale: Logit scale.
        dropout_p: Dropout on the attention weights (pass 0 outside training).
        fast: ``F.scaled_dot_product_attention``; False: :func:`attention_weights` of the
            ``(B, h, N, M)`` scores, written out.

    Returns:
        ``(B, N, C)``.
    """
    q, k, v = (split_heads(t, num_heads) for t in (q, k, v))
    if fast:
        x = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, scale=scale)
    else:
        weights = attention_weights(q, k, scale)
        if dropout_p:
            weights = F.dropout(weights, dropout_p)
        x = weights @ v
    return x.transpose(1, 2).flatten(2)


@contextlib.contextmanager
def keep_bn_statistics(module: nn.Module) -> Iterator[None]:
    """Restore every BatchNorm running statistic of ``module`` on exit.

    Activation checkpointing runs a branch's forward twice in training; without this the
    recomputation would update the running statistics a second time.
    """
    bns = [m for m in module.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    saved = [(m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone())
             for m in bns]
    try:
        yield
    finally:
        with torch.no_grad():
            for m, (mean, var, count) in zip(bns, saved):
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
                m.num_batches_tracked.copy_(count)
