"""Numerical equivalence with an independent implementation (the transformers port).

The port's weights reach ours through the official names (``tests.helpers.official_keys``
of the library's transformers table) and :func:`convert_official_cvt`, so both key tables
are on the path.
"""
import pytest
import torch

from cvt_backbone import CvT, convert_official_cvt
from cvt_backbone.checkpoint import convert_keys
from tests.helpers import build_port, official_keys

pytest.importorskip('transformers')


def stage_maps(model: CvT, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Raw (un-normed) stage maps and the final class token, through forward hooks."""
    maps, cls = [], []

    def hook(_module, _inputs, output):
        tokens, (h, w), token = output
        maps.append(tokens.transpose(1, 2).reshape(tokens.shape[0], -1, h, w))
        cls.append(token)

    handles = [s.register_forward_hook(hook) for s in model.stages]
    with torch.no_grad():
        model(x)
    for handle in handles:
        handle.remove()
    return maps, cls[-1]


def official_from_port(port) -> dict:
    """The port's weights under the official key names."""
    return official_keys(convert_keys(port.state_dict(), 'transformers'))


def ours_from_hf(hf_model, **kwargs) -> CvT:
    model = CvT(arch='cvt-13', **kwargs)
    state = convert_official_cvt(official_from_port(hf_model))
    model.load_state_dict(state, strict=False)
    return model.eval()


def assert_close_to_scale(ours: torch.Tensor, ref: torch.Tensor, tol: float = 1e-5) -> float:
    assert ours.shape == ref.shape
    err = (ours - ref).abs().max().item() / ref.abs().max().item()
    assert err <= tol, f'relative max error {err:.2e} > {tol:.0e}'
    return err


@pytest.mark.parametrize('hw, fast_kernels', [((224, 224), True), ((160, 248), False)])
def test_stage_maps_match_port_with_quick_gelu(hw, fast_kernels):
    """Both attention formulations, each at one size."""
    hf = build_port('cvt-13', quick_gelu=True)
    ours = ours_from_hf(hf, fast_kernels=fast_kernels)
    x = torch.randn(2, 3, *hw, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = hf(x, output_hidden_states=True)
    maps, cls = stage_maps(ours, x)
    for ours_map, ref_map in zip(maps, ref.hidden_states):
        assert_close_to_scale(ours_map, ref_map)
    assert_close_to_scale(cls, ref.cls_token_value)


def test_gelu_option_matches_port_as_shipped():
    hf = build_port('cvt-13', quick_gelu=False, seed=3)
    ours = ours_from_hf(hf, act_cfg=dict(type='GELU'))
    x = torch.randn(1, 3, 96, 128, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = hf(x, output_hidden_states=True)
    maps, _ = stage_maps(ours, x)
    assert_close_to_scale(maps[-1], ref.hidden_states[-1])
    # and the default QuickGELU does not: the activation matters at this tolerance
    quick = ours_from_hf(hf)
    assert (stage_maps(quick, x)[0][-1] - ref.hidden_states[-1]).abs().max() > 1e-3


def test_classifier_logits_match_port():
    hf = build_port('cvt-13', num_labels=10, quick_gelu=True, seed=5)
    state = convert_official_cvt(official_from_port(hf))
    backbone = CvT(arch='cvt-13', out_type='cls_token')
    backbone.load_state_dict({k: v for k, v in state.items() if not k.startswith('head.')})
    head = torch.nn.Linear(384, 10)
    head.load_state_dict({'weight': state['head.weight'], 'bias': state['head.bias']})
    backbone.eval()
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        ours = head(backbone(x)[0])
        ref = hf(x).logits
    assert_close_to_scale(ours, ref)
