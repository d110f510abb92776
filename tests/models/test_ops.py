"""The fast kernels (``fast_kernels=True``) compute what the layer-by-layer reference does."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from cvt_backbone import CvT
from cvt_backbone.models import ops
from cvt_backbone.models.cvt import DepthwiseConvBN, Mlp, map_to_tokens, tokens_to_map
from cvt_backbone.models.ops import SiLULinear, attention, query_chunks
from tests.helpers import TINY, randomize_norms, relative_error


@pytest.fixture(scope='module')
def cvt13():
    torch.manual_seed(0)
    model = CvT(arch='cvt-13')
    model.init_weights()
    randomize_norms(model)
    return model.eval()


@pytest.mark.parametrize('shape', [(2, 3, 64, 96), (1, 3, 45, 61)])
def test_fast_kernels_equal_reference_in_eval(cvt13, shape):
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        fused = cvt13.use_fast_kernels(True)(x)
        reference = cvt13.use_fast_kernels(False)(x)
    cvt13.use_fast_kernels(True)
    for a, b in zip(fused, reference):
        assert relative_error(a, b) < 1e-5


def test_fast_kernels_keep_state_dict_and_follow_new_weights():
    torch.manual_seed(0)
    model = CvT(arch=TINY).eval()
    keys = list(model.state_dict())
    model.use_fast_kernels(True)
    assert list(model.state_dict()) == keys
    assert 'stages.0.blocks.0.attn.conv_proj.k.bn.running_var' in keys
    # weights loaded after fusing are used: nothing is cached
    other = CvT(arch=TINY)
    randomize_norms(other, seed=3)
    model.load_state_dict(other.state_dict())
    x = torch.randn(1, 3, 48, 64)
    with torch.no_grad():
        assert relative_error(model(x)[-1], other.eval().use_fast_kernels(False)(x)[-1]) < 1e-5


def test_batchnorm_is_folded_only_with_running_statistics():
    torch.manual_seed(0)
    proj = DepthwiseConvBN(8, 3, 2, 1)
    randomize_norms(proj)
    x = tokens_to_map(torch.randn(2, 12 * 10, 8), (12, 10))
    proj.eval()
    with torch.no_grad():
        folded = proj(x)
        proj.fast_kernels = False
        reference = proj(x)
    assert relative_error(folded, reference) < 1e-6
    # train mode: batch statistics, the BatchNorm runs as a layer, statistics update once
    proj.train()
    proj.fast_kernels = True
    before = proj.bn.running_mean.clone()
    out = proj(x)
    assert not torch.equal(proj.bn.running_mean, before)
    assert torch.allclose(out.mean((0, 2, 3)), proj.bn.bias, atol=1e-5)


def test_norm_eval_training_gradients_match_reference():
    torch.manual_seed(0)
    ref = CvT(arch=TINY, norm_eval=True, fast_kernels=False)
    ref.init_weights()
    randomize_norms(ref)
    fused = CvT(arch=TINY, norm_eval=True)
    fused.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3, 48, 72)
    for model in (ref, fused):
        model.train()
        sum(o.pow(2).mean() for o in model(x)).backward()
    for (name, p), q in zip(ref.named_parameters(), fused.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_silu_form_of_quick_gelu_mlp():
    torch.manual_seed(0)
    mlp = Mlp(16, 64, dict(type='QuickGELU'))
    x = torch.randn(2, 10, 16, requires_grad=True)
    fused = mlp(x)
    grads_fused = torch.autograd.grad(fused.sum(), [x, *mlp.parameters()])
    mlp.fast_kernels = False
    reference = mlp(x)
    grads_ref = torch.autograd.grad(reference.sum(), [x, *mlp.parameters()])
    assert relative_error(fused, reference) < 1e-6
    for a, b in zip(grads_fused, grads_ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_silu_linear_gradients():
    torch.manual_seed(0)
    args = (torch.randn(2, 5, 8, dtype=torch.double, requires_grad=True),
            torch.randn(3, 8, dtype=torch.double, requires_grad=True),
            torch.randn(3, dtype=torch.double, requires_grad=True))
    assert torch.autograd.gradcheck(SiLULinear.apply, args)


def split_heads_attention(q, k, v, heads, scale):
    B, N, C = q.shape
    split = lambda t: t.view(B, t.shape[1], heads, C // heads).transpose(1, 2)  # noqa: E731
    x = F.scaled_dot_product_attention(split(q), split(k), split(v), scale=scale)
    return x.transpose(1, 2).reshape(B, N, C)


@pytest.mark.parametrize('batch, heads, queries', [(1, 1, 1024), (1, 3, 1000), (2, 1, 1001)])
def test_query_chunked_attention_matches_plain_attention(batch, heads, queries):
    torch.manual_seed(0)
    q, k, v = (torch.randn(batch, n, 16 * heads, requires_grad=True)
               for n in (queries, 300, 300))
    grad = torch.randn(batch, queries, 16 * heads)
    ours = attention(q, k, v, heads, 0.1)
    ref = split_heads_attention(q, k, v, heads, 0.1)
    # The same arithmetic per query row; torch 2.1's kernel blocks the grouped heads
    # differently, so equal to float rounding rather than bit for bit there.
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)
    for a, b in zip(torch.autograd.grad(ours, (q, k, v), grad),
                    torch.autograd.grad(ref, (q, k, v), grad)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_query_chunks_divide_the_queries():
    with_threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert query_chunks(1, 67200) == 4
        assert query_chunks(3, 16800) == 2
        assert query_chunks(6, 4201) == 1
        assert query_chunks(1, 1001) == 1 and query_chunks(1, 1000) == 2
    finally:
        torch.set_num_threads(with_threads)


def test_token_map_round_trip_stays_channels_last_without_copies():
    tokens = torch.randn(2, 6 * 7, 16)
    fmap = tokens_to_map(tokens, (6, 7))
    assert fmap.shape == (2, 16, 6, 7)
    assert fmap.is_contiguous(memory_format=torch.channels_last)
    conv = nn.Conv2d(16, 16, 3, padding=1, groups=16)
    out = map_to_tokens(conv(fmap))
    assert out.is_contiguous()  # the convolution kept the channels-last layout
    assert map_to_tokens(fmap).data_ptr() == tokens.data_ptr()


def test_reference_path_uses_no_fast_kernel(monkeypatch):
    """fast_kernels=False is the plain reference: no folding, no SiLU form, no query groups."""
    def forbidden(*args, **kwargs):
        raise AssertionError('a fast kernel ran on the reference path')

    for name in ('conv_bn', 'silu_mlp', 'query_chunks'):
        monkeypatch.setattr(ops, name, forbidden)
    model = CvT(arch=TINY, norm_eval=True, fast_kernels=False)
    x = torch.randn(1, 3, 64, 64)
    model.train()(x)[-1].sum().backward()
    with torch.no_grad():
        model.eval()(x)
    with pytest.raises(AssertionError, match='fast kernel'):
        model.use_fast_kernels(True).eval()(x)
