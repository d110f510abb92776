"""The fast path (``fast_kernels=True``) and the deploy form (``switch_to_deploy``) compute
what the layer-by-layer reference does, forward and backward."""
import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from cvt_backbone import CvT
from cvt_backbone.models import attention as ops
from cvt_backbone.models.cvt import DepthwiseConvBN, map_to_tokens, tokens_to_map
from tests.helpers import TINY, randomize_norms, relative_error


def random_model(arch=TINY, **kwargs) -> CvT:
    """A CvT with the official init and non-trivial norm statistics."""
    torch.manual_seed(0)
    model = CvT(arch=arch, **kwargs)
    model.init_weights()
    randomize_norms(model)
    return model


@pytest.fixture(scope='module')
def cvt13() -> CvT:
    return random_model('cvt-13').eval()


@pytest.mark.parametrize('shape', [(2, 3, 64, 96), (1, 3, 45, 61)])
def test_fast_kernels_equal_reference_in_eval(cvt13, shape):
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        fast = cvt13.use_fast_kernels(True)(x)
        reference = cvt13.use_fast_kernels(False)(x)
    cvt13.use_fast_kernels(True)
    for a, b in zip(fast, reference):
        assert relative_error(a, b) < 1e-5


@pytest.mark.parametrize('norm_eval', [False, True])
def test_fast_kernels_gradients_equal_reference(norm_eval):
    reference = random_model(norm_eval=norm_eval, fast_kernels=False)
    fast = copy.deepcopy(reference).use_fast_kernels(True)
    x = torch.randn(2, 3, 48, 72)
    inputs = []
    for model in (reference, fast):
        model.train()
        inputs.append(x.clone().requires_grad_())
        sum(o.pow(2).mean() for o in model(inputs[-1])).backward()
    torch.testing.assert_close(inputs[1].grad, inputs[0].grad, rtol=1e-4, atol=1e-6)
    for (name, p), q in zip(reference.named_parameters(), fast.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-6, msg=name)
    for (name, b), c in zip(reference.named_buffers(), fast.buffers()):
        torch.testing.assert_close(c, b, msg=name)  # the same BatchNorm statistics


def test_reference_path_is_plain_layers(monkeypatch):
    """fast_kernels=False: no fused attention kernel; every BatchNorm runs as a layer."""
    def forbidden(*args, **kwargs):
        raise AssertionError('F.scaled_dot_product_attention ran on the reference path')

    monkeypatch.setattr(F, 'scaled_dot_product_attention', forbidden)
    model = random_model(fast_kernels=False)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    ran = []
    for bn in bns:
        bn.register_forward_hook(lambda module, args, out: ran.append(module))
    x = torch.randn(1, 3, 64, 64)
    model.train()(x)[-1].sum().backward()
    with torch.no_grad():
        model.eval()(x)
    assert len(ran) == 2 * len(bns) == 2 * 3 * sum(TINY['depths'])
    with pytest.raises(AssertionError, match='reference path'):
        model.use_fast_kernels(True)(x)


def test_fast_kernels_keep_the_state_dict():
    model = CvT(arch=TINY, fast_kernels=False)
    keys = list(model.state_dict())
    assert list(model.use_fast_kernels(True).state_dict()) == keys
    assert 'stages.0.blocks.0.attn.conv_proj.k.bn.running_var' in keys


@pytest.mark.parametrize('heads', [1, 3])
def test_attention_formulations_agree_with_gradients(heads):
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, n, 8 * heads, dtype=torch.double, requires_grad=True)
               for n in (50, 13, 13))
    grad = torch.randn(2, 50, 8 * heads, dtype=torch.double)
    fast = ops.attention(q, k, v, heads, 0.3, fast=True)
    reference = ops.attention(q, k, v, heads, 0.3, fast=False)
    torch.testing.assert_close(fast, reference)
    for a, b in zip(torch.autograd.grad(fast, (q, k, v), grad),
                    torch.autograd.grad(reference, (q, k, v), grad)):
        torch.testing.assert_close(a, b)


def test_attention_weights_take_boolean_and_additive_masks():
    """The one written-out softmax attention (the reference path, the attention maps and the
    mmdeploy rewrite use it): rows sum to 1, a boolean mask zeroes what it leaves out, an
    additive one of 0 and -inf does the same."""
    torch.manual_seed(0)
    q, k = torch.randn(2, 5, 4), torch.randn(2, 7, 4)
    weights = ops.attention_weights(q, k, 0.5)
    torch.testing.assert_close(weights, torch.softmax(q @ k.transpose(1, 2) * 0.5, -1))
    keep = torch.rand(5, 7) > 0.3
    keep[:, 0] = True
    masked = ops.attention_weights(q, k, 0.5, keep)
    assert (masked[:, ~keep] == 0).all()
    torch.testing.assert_close(masked.sum(-1), torch.ones(2, 5))
    additive = torch.zeros(5, 7).masked_fill(~keep, float('-inf'))
    torch.testing.assert_close(ops.attention_weights(q, k, 0.5, additive), masked)


def test_attention_heads_are_channel_blocks():
    """Channel c belongs to head c // d: heads attend independently."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, n, 6) for n in (7, 5, 5))
    both = ops.attention(q, k, v, 2, 0.5, fast=False)
    for h in range(2):
        part = slice(3 * h, 3 * h + 3)
        torch.testing.assert_close(
            both[..., part], ops.attention(q[..., part], k[..., part], v[..., part], 1, 0.5))


def test_fused_projection_equals_conv_then_batchnorm():
    torch.manual_seed(0)
    proj = DepthwiseConvBN(8, 3, 2, 1)
    randomize_norms(proj)
    x = tokens_to_map(torch.randn(2, 12 * 10, 8), (12, 10))
    with torch.no_grad():
        torch.testing.assert_close(proj.fuse()(x), proj.eval()(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('fast_kernels', [True, False])
def test_switch_to_deploy_computes_the_same(fast_kernels):
    model = random_model(fast_kernels=fast_kernels).eval()
    x = torch.randn(2, 3, 61, 83)
    with torch.no_grad():
        before = model(x)
        deployed = copy.deepcopy(model).switch_to_deploy()
        after = deployed(x)
    for a, b in zip(after, before):
        assert relative_error(a, b) < 1e-5
    assert not any(isinstance(m, (nn.BatchNorm2d, DepthwiseConvBN))
                   for m in deployed.modules())
    keys = set(deployed.state_dict())
    assert 'stages.0.blocks.0.attn.conv_proj.k.bias' in keys
    assert keys == set(deployed.switch_to_deploy().state_dict())  # a second call: no change
    assert len(keys) == len(model.state_dict()) - 3 * 4 * sum(TINY['depths'])


def test_token_map_round_trip_stays_channels_last_without_copies():
    tokens = torch.randn(2, 6 * 7, 16)
    fmap = tokens_to_map(tokens, (6, 7))
    assert fmap.shape == (2, 16, 6, 7)
    assert fmap.is_contiguous(memory_format=torch.channels_last)
    conv = nn.Conv2d(16, 16, 3, padding=1, groups=16)
    out = map_to_tokens(conv(fmap))
    assert out.is_contiguous()  # the convolution kept the channels-last layout
    assert map_to_tokens(fmap).data_ptr() == tokens.data_ptr()
