"""Rows of a CvT block's attention weights, for chosen queries only.

A block attends with ``softmax(q k^T * scale)`` per head: ``N`` queries (the stage's map, and
the class token first in the last stage) over ``M`` keys (the map after the key/value
projection of stride ``kv_stride``, and the class token first). At 1333x800 the first stage
of CvT-13 has 67k queries and 17k keys, 1.1 G weights. :func:`attention_rows` computes the
rows of the queries asked for and nothing else: ``h x R x M`` values for ``R`` queries.

    model = CvT(arch='cvt-13').eval()
    block = model.stages[2].blocks[-1]
    inputs = capture_block_inputs(model, images, stage=2, block=len(model.stages[2].blocks) - 1)
    rows = attention_rows(block.attn, inputs, queries=[0])   # the class token's row
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from cvt_backbone import CvT
from cvt_backbone.models.attention import attention_weights, split_heads
from cvt_backbone.models.cvt import ConvAttention, conv_out_size


@dataclass
class BlockInputs:
    """What a block's attention got: normalised tokens and the shape of their map.

    Attributes:
        tokens: ``(B, N, C)`` (``norm1`` of the block's input), class token first when
            ``with_cls_token``.
        hw_shape: ``(H, W)`` of the stage's map; ``N = H * W`` (+1).
        with_cls_token: Whether ``tokens[:, 0]`` is the class token.
    """
    tokens: torch.Tensor
    hw_shape: tuple[int, int]
    with_cls_token: bool


class _Captured(Exception):
    """Ends a forward pass once the block's inputs are captured: later stages are not run."""


def capture_block_inputs(model: CvT, images: torch.Tensor, stage: int, block: int
                         ) -> BlockInputs:
    """Run ``model`` on ``images`` up to the attention of ``stages[stage].blocks[block]``.

    Args:
        model: The backbone.
        images: ``(B, in_channels, H, W)``.
        stage: Stage index.
        block: Block index within the stage.

    Returns:
        The attention's inputs.

    Raises:
        IndexError: no such stage or block; the message says how many there are.
    """
    if not 0 <= stage < len(model.stages):
        raise IndexError(f'stage {stage} does not exist: this CvT has stages 0..'
                         f'{len(model.stages) - 1}')
    blocks = model.stages[stage].blocks
    if not 0 <= block < len(blocks):
        raise IndexError(f'block {block} does not exist: stage {stage} has blocks 0..'
                         f'{len(blocks) - 1}')
    captured = []

    def hook(module, args):
        captured.append(BlockInputs(*args))
        raise _Captured

    handle = blocks[block].attn.register_forward_pre_hook(hook)
    try:
        with torch.no_grad():
            model(images)
    except _Captured:
        pass
    finally:
        handle.remove()
    return captured[0]


def key_grid(attn: ConvAttention, hw_shape: tuple[int, int]) -> tuple[int, int]:
    """``(H', W')`` of the keys: the map after the key projection's stride."""
    conv = attn.conv_proj.k
    conv = getattr(conv, 'conv', conv)  # after switch_to_deploy the fused convolution itself
    return tuple(conv_out_size(s, conv.kernel_size[0], conv.stride[0], conv.padding[0])
                 for s in hw_shape)


def query_index(point: tuple[float, float], image_hw: tuple[int, int],
                inputs: BlockInputs) -> int:
    """The token whose map cell holds image pixel ``point = (x, y)``.

    The stage's map covers the image evenly (cell ``(i, j)`` spans rows
    ``i * H / H_s .. (i + 1) * H / H_s``), so the cell is ``floor(y * H_s / H)``, likewise
    for x; the class token, when present, shifts every index by one.

    Raises:
        ValueError: the point lies outside the image.
    """
    x, y = point
    height, width = image_hw
    if not (0 <= x < width and 0 <= y < height):
        raise ValueError(f'point ({x:g}, {y:g}) lies outside the {width}x{height} image')
    rows, cols = inputs.hw_shape
    row, col = int(y * rows / height), int(x * cols / width)
    return row * cols + col + int(inputs.with_cls_token)


def attention_rows(attn: ConvAttention, inputs: BlockInputs, queries: Sequence[int]
                   ) -> torch.Tensor:
    """Rows ``queries`` of each head's ``softmax(q k^T * scale)``, as the block computes it.

    ``q`` and ``k`` are the block's own: the depthwise projections (keys at the key/value
    stride, the class token bypassing them), the linear projections, heads split as channel
    ``c`` -> head ``c // d``, and ``scale = embed_dims ** -0.5`` over the whole stage width.
    Only the asked rows of the weights are formed.

    Args:
        attn: The block's attention.
        inputs: Its inputs (:func:`capture_block_inputs`).
        queries: Token indices (0 is the class token in a stage that has one).

    Returns:
        ``(B, heads, len(queries), M)``; keys in the order of the block's (class token
        first, then the key grid of :func:`key_grid` row by row).
    """
    num_tokens = inputs.tokens.shape[1]
    bad = [i for i in queries if not 0 <= i < num_tokens]
    if bad:
        raise IndexError(f'queries {bad} out of range: the block has {num_tokens} tokens')
    with torch.no_grad():
        q, k, _ = attn.conv_proj(inputs.tokens, inputs.hw_shape, inputs.with_cls_token)
        q = attn.proj_q(q[:, list(queries)])      # (B, R, C): the asked queries only
        k = attn.proj_k(k)                        # (B, M, C)
        q, k = split_heads(q, attn.num_heads), split_heads(k, attn.num_heads)  # (B, h, *, d)
        return attention_weights(q, k, attn.scale)
