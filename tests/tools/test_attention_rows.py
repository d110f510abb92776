"""attention_rows: the asked rows of each head's softmax(q k^T * scale), and only those.

The rows are compared with the same rows of an explicit full softmax written out here (keys
from the stride-2 key/value projection, the class token first in the last stage, the scale
over the whole stage width), and checked against the block itself: the rows times the
values, through the output projection, give the block's attention output at those queries.
"""
from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from attention_rows import attention_rows, capture_block_inputs, key_grid, query_index
from cvt_backbone import CvT
from tests.helpers import TINY, randomize_norms


@pytest.fixture(scope='module')
def model() -> CvT:
    torch.manual_seed(0)
    model = CvT(arch=TINY, kv_strides=2)
    model.init_weights()
    randomize_norms(model, 0)
    return model.eval()


def full_softmax(attn, inputs) -> torch.Tensor:
    """Every row of softmax(q k^T * embed_dims ** -0.5) per head, ``(B, h, N, M)``."""
    x, (H, W) = inputs.tokens, inputs.hw_shape
    cls, x = (x[:, :1], x[:, 1:]) if inputs.with_cls_token else (x[:, :0], x)
    grid = x.transpose(1, 2).reshape(x.shape[0], -1, H, W)
    proj = attn.conv_proj
    q = torch.cat((cls, proj.q.bn(proj.q.conv(grid)).flatten(2).transpose(1, 2)), 1)
    k = torch.cat((cls, proj.k.bn(proj.k.conv(grid)).flatten(2).transpose(1, 2)), 1)
    q, k = attn.proj_q(q), attn.proj_k(k)
    B, N, C = q.shape
    h = attn.num_heads
    q = q.reshape(B, N, h, C // h).permute(0, 2, 1, 3)
    k = k.reshape(B, k.shape[1], h, C // h).permute(0, 2, 1, 3)
    return torch.softmax(q @ k.transpose(-2, -1) * C ** -0.5, dim=-1)


@pytest.mark.parametrize('stage, block', [(0, 0), (1, 0), (2, 1)])
def test_rows_equal_the_explicit_softmax_rows(model, stage, block):
    images = torch.randn(2, 3, 61, 83)
    inputs = capture_block_inputs(model, images, stage, block)
    attn = model.stages[stage].blocks[block].attn
    num_tokens = inputs.tokens.shape[1]
    queries = [0, num_tokens // 3, num_tokens - 1]
    with torch.no_grad():
        full = full_softmax(attn, inputs)
    rows = attention_rows(attn, inputs, queries)
    grid = key_grid(attn, inputs.hw_shape)
    assert rows.shape == (2, TINY['num_heads'][stage], 3,
                          grid[0] * grid[1] + int(inputs.with_cls_token))
    torch.testing.assert_close(rows, full[:, :, queries], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(rows.sum(-1), torch.ones(rows.shape[:-1]))


@pytest.mark.parametrize('stage, block', [(0, 0), (2, 1)])
def test_rows_reproduce_the_blocks_attention_output(model, stage, block):
    images = torch.randn(1, 3, 64, 48)
    inputs = capture_block_inputs(model, images, stage, block)
    attn = model.stages[stage].blocks[block].attn
    queries = [0, 5, inputs.tokens.shape[1] - 2]
    rows = attention_rows(attn, inputs, queries)        # (1, h, R, M)
    with torch.no_grad():
        _, _, v = attn.conv_proj(inputs.tokens, inputs.hw_shape, inputs.with_cls_token)
        v = attn.proj_v(v).unflatten(-1, (attn.num_heads, -1)).transpose(1, 2)
        ours = attn.proj((rows @ v).transpose(1, 2).flatten(2))
        theirs = attn(inputs.tokens, inputs.hw_shape, inputs.with_cls_token)[:, queries]
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)


class _LargestOutput(TorchDispatchMode):
    """Records the largest tensor any operation makes."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def test_only_the_asked_rows_are_formed(model):
    images = torch.randn(1, 3, 512, 384)   # stage 0: 128x96 queries over 64x48 keys
    inputs = capture_block_inputs(model, images, 0, 0)
    attn = model.stages[0].blocks[0].attn
    num_queries, num_keys = inputs.tokens.shape[1], 64 * 48
    with _LargestOutput() as probe:
        rows = attention_rows(attn, inputs, [10, 2000])
    assert rows.shape == (1, 1, 2, num_keys)
    # the token maps (N x C) are the largest tensors; a score matrix would be N x M
    assert probe.largest <= num_queries * TINY['embed_dims'][0]
    assert probe.largest * 100 < num_queries * num_keys


def test_query_index_finds_the_cell_under_a_point(model):
    inputs = capture_block_inputs(model, torch.randn(1, 3, 64, 64), 2, 0)  # 4x4 + class token
    assert inputs.hw_shape == (4, 4) and inputs.with_cls_token
    assert query_index((0, 0), (64, 64), inputs) == 1
    assert query_index((63, 0), (64, 64), inputs) == 4
    assert query_index((17, 40), (64, 64), inputs) == 1 + 2 * 4 + 1
    with pytest.raises(ValueError, match='outside the 64x64 image'):
        query_index((64, 3), (64, 64), inputs)


def test_bad_stage_block_or_query_is_named(model):
    images = torch.randn(1, 3, 32, 32)
    with pytest.raises(IndexError, match=r'stage 3 does not exist: this CvT has stages 0\.\.2'):
        capture_block_inputs(model, images, 3, 0)
    with pytest.raises(IndexError, match=r'block 1 does not exist: stage 0 has blocks 0\.\.0'):
        capture_block_inputs(model, images, 0, 1)
    inputs = capture_block_inputs(model, images, 0, 0)
    with pytest.raises(IndexError, match='out of range'):
        attention_rows(model.stages[0].blocks[0].attn, inputs, [64])

