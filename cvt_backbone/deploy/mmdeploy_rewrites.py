"""The rewrites a CvT detector or segmentor needs in mmdeploy's ONNX export.

Importing this module registers two function rewrites with mmdeploy's rewriter registry, for
every backend that takes ONNX. Registered for the ONNX IR, they take precedence over
mmdeploy's default rewrites of the same functions while an export runs, and change nothing
outside mmdeploy's rewriting context. ``import cvt_backbone`` never imports this module; the
deployment tool (``tools/deployment/mmdeploy_export.py``) does.

* ``F.scaled_dot_product_attention``: mmdeploy's default rewrite divides the logits by
  ``scale``, where PyTorch multiplies by it. CvT passes its scale, ``embed_dims ** -0.5``,
  so that rewrite makes every logit ``embed_dims`` times too large. Here the attention is
  written out as PyTorch defines it, with the package's one written-out attention
  (:func:`~cvt_backbone.models.attention.attention_weights`).
* ``F.adaptive_avg_pool2d``: mmdeploy's default rewrite replaces it by an average pooling
  whose kernel is computed from the size seen at export time, which is wrong at any other
  size and inexact where the size does not divide evenly. Here it is PyTorch's adaptive
  pooling at every size: each output cell averages the input rows
  ``floor(i * H / h) .. ceil((i + 1) * H / h) - 1`` (likewise columns), computed as two
  matrix products with averaging matrices built from the input's size.
"""
from __future__ import annotations

import torch
from mmdeploy.core import FUNCTION_REWRITER
from mmdeploy.utils import IR
from torch.nn.modules.utils import _pair

from ..models.attention import attention_weights


@FUNCTION_REWRITER.register_rewriter(
    func_name='torch.nn.functional.scaled_dot_product_attention', ir=IR.ONNX)
def scaled_dot_product_attention__onnx(query: torch.Tensor, key: torch.Tensor,
                                       value: torch.Tensor,
                                       attn_mask: torch.Tensor | None = None,
                                       dropout_p: float = 0., is_causal: bool = False,
                                       scale: float | None = None, **kwargs) -> torch.Tensor:
    """``softmax(query @ key^T * scale + mask) @ value``, as PyTorch defines it.

    Args:
        query: ``(..., N, d)``.
        key: ``(..., M, d)``.
        value: ``(..., M, d_v)``.
        attn_mask: Boolean (True: attend) or additive mask broadcastable to ``(..., N, M)``.
        dropout_p: Dropout on the weights (an export runs in eval mode: 0).
        is_causal: Mask every key after its query.
        scale: Logit scale; ``d ** -0.5`` when None.

    Returns:
        ``(..., N, d_v)``.
    """
    if scale is None:
        scale = query.shape[-1] ** -0.5
    if is_causal:
        keep = torch.ones(query.shape[-2], key.shape[-2], dtype=torch.bool,
                          device=query.device).tril()
        attn_mask = keep if attn_mask is None else attn_mask & keep
    weights = attention_weights(query, key, scale, attn_mask)
    if dropout_p:
        weights = torch.dropout(weights, dropout_p, True)
    return weights @ value


def _averaging_matrix(size: torch.Tensor | int, bins: int, like: torch.Tensor
                      ) -> torch.Tensor:
    """``(bins, size)``: row ``i`` averages ``floor(i * size / bins)`` up to
    ``ceil((i + 1) * size / bins)`` (exclusive), as adaptive pooling does."""
    positions = torch.arange(size, device=like.device)
    cells = torch.arange(bins, device=like.device).unsqueeze(1)
    start = torch.div(cells * size, bins, rounding_mode='floor')
    end = torch.div((cells + 1) * size + bins - 1, bins, rounding_mode='floor')
    inside = ((positions >= start) & (positions < end)).to(like.dtype)
    return inside / inside.sum(dim=1, keepdim=True)


@FUNCTION_REWRITER.register_rewriter(
    func_name='torch.nn.functional.adaptive_avg_pool2d', ir=IR.ONNX)
def adaptive_avg_pool2d__onnx(input: torch.Tensor, output_size: int | tuple[int, int]
                              ) -> torch.Tensor:
    """PyTorch's adaptive average pooling at any input size.

    Args:
        input: ``(B, C, H, W)``.
        output_size: ``(h, w)`` or one int for both; fixed numbers (what every OpenMMLab
            head passes).

    Returns:
        ``(B, C, h, w)``.
    """
    height, width = _pair(output_size)
    if height == width == 1:  # a global average, which every exporter handles
        return FUNCTION_REWRITER.get_context().origin_func(input, output_size)
    rows = _averaging_matrix(input.shape[2], height, input)
    columns = _averaging_matrix(input.shape[3], width, input)
    return rows @ input @ columns.transpose(0, 1)
