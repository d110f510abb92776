"""Property tests: every input either gives the documented output or a clear ValueError.

The documented output (CvT's docstring): stage ``i`` has a map of
``H_i = floor((H_{i-1} + 2 p_i - k_i) / s_i) + 1`` with (k, s, p) = (7, 4, 2), (3, 2, 1),
(3, 2, 1), i.e. at least 3 pixels per side, and ``embed_dims[i]`` channels.

The backbone is tiny, with key/value strides of 8, 4, 2 so that a 1500x1500 input costs about
a second: the key/value stride changes the attention's cost, not the output shapes.
"""
from __future__ import annotations

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from cvt_backbone import CvT

ARCH = dict(embed_dims=[8, 16, 24], depths=[1, 1, 1], num_heads=[1, 2, 3])
KV_STRIDES = [8, 4, 2]
STAGES = ((7, 4, 2), (3, 2, 1), (3, 2, 1))  # (kernel, stride, padding), as documented
_models: dict[int, CvT] = {}


def model_for(in_channels: int) -> CvT:
    """One eval-mode model per input channel count, built once."""
    if in_channels not in _models:
        torch.manual_seed(in_channels)
        model = CvT(arch=ARCH, in_channels=in_channels, kv_strides=KV_STRIDES)
        model.init_weights()
        _models[in_channels] = model.eval()
    return _models[in_channels]


def documented_sizes(size: int) -> list[int]:
    sizes = []
    for kernel, stride, padding in STAGES:
        size = (size + 2 * padding - kernel) // stride + 1
        sizes.append(size)
    return sizes


@settings(max_examples=40, deadline=None)
@given(height=st.integers(1, 1500), width=st.integers(1, 1500), batch=st.integers(0, 2),
       in_channels=st.sampled_from([1, 3, 4]), channels=st.integers(1, 4))
@example(height=1500, width=1500, batch=1, in_channels=3, channels=3)
@example(height=3, width=1500, batch=2, in_channels=1, channels=1)
@example(height=2, width=2, batch=1, in_channels=3, channels=3)
def test_any_input_gives_the_documented_output_or_a_clear_error(height, width, batch,
                                                                in_channels, channels):
    model = model_for(in_channels)
    x = torch.randn(batch, channels, height, width)
    errors = []
    if channels != in_channels:
        errors.append(rf'built with in_channels={in_channels}, but the input has {channels} '
                      rf'channels')
    if batch == 0:
        errors.append(r'empty batch')
    if min(height, width) < 3:
        errors.append(rf'Input of {height}x{width} pixels is too small for CvT: .* at least 3 '
                      rf'pixels')
    if errors:
        with pytest.raises(ValueError, match='|'.join(f'({e})' for e in errors)):
            model(x)
        return
    with torch.no_grad():
        outs = model(x)
    expected = list(zip(documented_sizes(height), documented_sizes(width)))
    assert model.output_shapes(height, width) == expected
    assert [tuple(o.shape) for o in outs] == [
        (batch, dims, h, w) for dims, (h, w) in zip(ARCH['embed_dims'], expected)]
    assert all(torch.isfinite(o).all() for o in outs)


@given(shape=st.lists(st.integers(1, 8), min_size=0, max_size=6).filter(lambda s: len(s) != 4))
@settings(max_examples=15, deadline=None)
def test_inputs_that_are_not_4d_are_named(shape):
    with pytest.raises(ValueError, match=r'CvT expects a 4-D input \(B, C, H, W\), got shape'):
        model_for(3)(torch.randn(tuple(shape)))


def _autocast_forward(model: CvT, x: torch.Tensor, dtype: torch.dtype) -> tuple:
    try:
        with torch.no_grad(), torch.autocast('cpu', dtype=dtype):
            return model(x)
    except RuntimeError as err:
        if dtype is torch.float16 and 'autocast' in str(err).lower():
            pytest.skip(f'this torch has no float16 autocast on the CPU: {err}')
        raise


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_autocast_at_detection_size_is_finite_and_close(dtype):
    torch.manual_seed(0)
    model = CvT(arch=dict(embed_dims=[16, 32, 48], depths=[1, 1, 2], num_heads=[1, 2, 3]))
    model.init_weights()
    model.eval()
    outs = _autocast_forward(model, torch.randn(1, 3, 800, 1344), dtype)
    assert [tuple(o.shape) for o in outs] == [(1, 16, 200, 336), (1, 32, 100, 168),
                                              (1, 48, 50, 84)]
    assert all(torch.isfinite(o).all() for o in outs)
    small = torch.randn(2, 3, 96, 128)
    with torch.no_grad():
        reference = model(small)
    for low, ref in zip(_autocast_forward(model, small, dtype), reference):
        error = (low.float() - ref).norm() / ref.norm()
        assert error < 3e-2, f'{dtype}: relative error {error:.3g}'
