"""Fast formulations of CvT's layers, each the same function as its reference up to rounding.

The architecture (:mod:`.cvt`) calls these when a layer's ``fast_kernels`` switch is on
(``CvT(fast_kernels=True)``, the default; :meth:`CvT.use_fast_kernels` flips it at any
time). With the switch off every layer runs its plain PyTorch reference: BatchNorm after
the depthwise convolution, QuickGELU as written, attention over all queries at once.

* :func:`conv_bn`: a depthwise convolution with its BatchNorm folded in, while the
  BatchNorm uses running statistics (eval mode or ``norm_eval``).
* :func:`silu_mlp`: ``fc2(x * sigmoid(a x))`` as ``fc2'(silu(fc1'(t)))`` with the factor
  ``a`` moved into the linear layers: one elementwise kernel instead of three, and with
  autograd one stored hidden activation instead of three (:class:`SiLULinear`).
* :func:`attention`: scaled dot-product attention that, when autograd records on the CPU,
  deals the queries into groups that act as extra heads, so PyTorch's CPU backward (which
  parallelises over batch x heads only) uses every thread even for one-head stages.

:func:`keep_bn_statistics` is not a fast path but what activation checkpointing needs: the
recomputed forward must not update the BatchNorm running statistics a second time.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.autograd.function import once_differentiable
from torch.nn.modules.batchnorm import _BatchNorm


def folded_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight ``(C, 1, k, k)`` and bias ``(C,)`` of ``bn(conv(x))`` as one convolution.

    ``w * gamma / sqrt(var + eps)`` and ``beta - mean * gamma / sqrt(var + eps)``, computed
    from the current parameters (``C * k * k`` values, negligible), so the folded form can
    never go stale. Valid while ``bn`` normalises with its running statistics.
    """
    scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
    bias = bn.bias - bn.running_mean * scale
    if conv.bias is not None:
        bias = bias + conv.bias * scale
    return conv.weight * scale.view(-1, 1, 1, 1), bias


def conv_bn(x: torch.Tensor, conv: nn.Conv2d, bn: nn.BatchNorm2d) -> torch.Tensor:
    """``bn(conv(x))`` with the BatchNorm folded in: ``(B, C, H, W) -> (B, C, H', W')``."""
    weight, bias = folded_conv_bn(conv, bn)
    return F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)


class SiLULinear(torch.autograd.Function):
    """``linear(silu(x), weight, bias)`` that keeps only ``x`` for the backward pass.

    Autograd would keep both ``x`` (for the SiLU gradient) and ``silu(x)`` (for the weight
    gradient): two hidden-size activations per MLP. This recomputes ``silu(x)`` in the
    backward pass instead (one elementwise kernel), halving what the MLP keeps.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
                ) -> torch.Tensor:
        """``(..., C_in) -> (..., C_out)``."""
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return F.linear(F.silu(x), weight, bias)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor
                 ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        """Gradients of ``x``, ``weight`` and ``bias``."""
        x, weight = ctx.saved_tensors
        grad_x = grad_weight = grad_bias = None
        grad_rows = grad_out.reshape(-1, grad_out.shape[-1])
        if ctx.needs_input_grad[1]:
            act = F.silu(x).reshape(-1, x.shape[-1]).to(grad_out.dtype)
            grad_weight = (grad_rows.t() @ act).to(weight.dtype)
            del act  # before the input gradient's buffers are allocated
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad_rows.sum(0).to(weight.dtype)
        if ctx.needs_input_grad[0]:
            grad_x = grad_out @ weight.to(grad_out.dtype)
            # silu'(x) * grad, written over the activation gradient (no second buffer)
            torch.ops.aten.silu_backward.grad_input(grad_x, x.to(grad_x.dtype),
                                                    grad_input=grad_x)
            grad_x = grad_x.to(x.dtype)
        return grad_x, grad_weight, grad_bias


def silu_mlp(x: torch.Tensor, fc1: nn.Linear, fc2: nn.Linear, alpha: float,
             drop: nn.Dropout) -> torch.Tensor:
    """``fc2(drop(h * sigmoid(alpha h)))`` with ``h = fc1(x)``, in the SiLU form.

    ``h * sigmoid(a h) = silu(a h) / a``: ``fc1`` is scaled by ``a`` and ``fc2``'s weight
    divided by it, computed from the current weights at each call.

    Args:
        x: Tokens ``(B, N, C)``.
        fc1: ``C -> hidden``.
        fc2: ``hidden -> C``.
        alpha: The QuickGELU factor (1.702).
        drop: Dropout after the activation.

    Returns:
        ``(B, N, C)``.
    """
    hidden = F.linear(x, fc1.weight * alpha, fc1.bias * alpha)
    weight = fc2.weight / alpha
    if not torch.is_grad_enabled():
        return F.linear(drop(F.silu(hidden, inplace=True)), weight, fc2.bias)
    if drop.p and drop.training:
        return F.linear(drop(F.silu(hidden)), weight, fc2.bias)
    return SiLULinear.apply(hidden, weight, fc2.bias)


def query_chunks(batch_heads: int, num_queries: int) -> int:
    """Query groups that let the CPU attention backward use every thread.

    Two tasks per thread balance the work; groups of fewer than 256 queries do not pay.

    Returns:
        The largest divisor of ``num_queries`` not above that target (1: no grouping).
    """
    target = min(-(-2 * torch.get_num_threads() // batch_heads), num_queries // 256)
    return max(c for c in range(1, max(target, 1) + 1) if num_queries % c == 0)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_heads: int, scale: float,
              dropout_p: float = 0., fast: bool = True) -> torch.Tensor:
    """Multi-head scaled dot-product attention over tokens, without a score matrix.

    Channel ``c`` of a token belongs to head ``c // d`` (``d = C / num_heads``), as in the
    official code. With ``fast`` and autograd recording on the CPU the queries are dealt
    into ``chunks`` interleaved groups (query ``n`` to group ``n % chunks``) that act as
    extra heads, each attending to all keys: the same result, a backward on all threads.
    The groups are strided views of the queries and the output is a view of the attention
    result, so nothing is copied but, with several heads, the repeated keys and values.

    Args:
        q: Queries ``(B, N, C)``.
        k: Keys ``(B, M, C)``.
        v: Values ``(B, M, C)``.
        num_heads: Attention heads ``h``.
        scale: Logit scale.
        dropout_p: Dropout on the attention weights.
        fast: Allow the query grouping.

    Returns:
        ``(B, N, C)``.
    """
    B, N, C = q.shape
    M, d = k.shape[1], C // num_heads
    records_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
    chunks = (query_chunks(B * num_heads, N)
              if fast and records_grad and q.device.type == 'cpu' else 1)
    # (B, N, C) -> (B, N/chunks, chunks * h, d) -> (B, chunks * h, N/chunks, d)
    q = q.view(B, N // chunks, chunks * num_heads, d).transpose(1, 2)
    k, v = (t.view(B, M, 1, num_heads, d).expand(-1, -1, chunks, -1, -1)
            .reshape(B, M, chunks * num_heads, d).transpose(1, 2) for t in (k, v))
    x = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, scale=scale)
    return x.transpose(1, 2).reshape(B, N, C)


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
