"""The CvT backbone: shapes, parameter counts, training switches, errors."""
import pytest
import torch
import torch.nn as nn

from cvt_backbone import CvT
from tests.helpers import TINY


def expected_hw(size: int) -> list[int]:
    sizes = []
    for k, s, p in ((7, 4, 2), (3, 2, 1), (3, 2, 1)):
        size = (size + 2 * p - k) // s + 1
        sizes.append(size)
    return sizes


@pytest.mark.parametrize('arch, dims', [('cvt-13', [64, 192, 384]), ('cvt-21', [64, 192, 384]),
                                        ('cvt-w24', [192, 768, 1024])])
@pytest.mark.parametrize('hw', [(64, 64), (37, 91), (3, 5)])
def test_preset_output_shapes(arch, dims, hw, presets):
    model = presets[arch]
    with torch.no_grad():
        outs = model(torch.randn(2, 3, *hw))
    assert len(outs) == 3
    for out, c, h, w in zip(outs, dims, expected_hw(hw[0]), expected_hw(hw[1])):
        assert out.shape == (2, c, h, w)
        assert out.is_contiguous()
        assert torch.isfinite(out).all()


@pytest.fixture(scope='module')
def presets():
    torch.manual_seed(0)
    return {name: CvT(arch=name).eval() for name in ('cvt-13', 'cvt-21', 'cvt-w24')}


def test_strides_at_detection_size():
    with torch.device('meta'):  # shapes only: the same code, no arithmetic
        model = CvT(arch=TINY).eval()
        outs = model(torch.randn(1, 3, 800, 1344))
    assert [o.shape[2:] for o in outs] == [(200, 336), (100, 168), (50, 84)]
    assert model.output_shapes(800, 1333) == [(200, 333), (100, 167), (50, 84)]


# Counts of the official models (CVT_FACTS.md): with a 1000-class head, and without it.
@pytest.mark.parametrize('arch, with_head, without_head', [
    ('cvt-13', 20.00, 19.61), ('cvt-21', 31.62, 31.24), ('cvt-w24', 277.20, 276.17)])
def test_parameter_counts_match_official(arch, with_head, without_head):
    with torch.device('meta'):  # counts only: no memory, no initialisation
        backbone = CvT(arch=arch, out_type='cls_token')
    n = sum(p.numel() for p in backbone.parameters())
    head = nn.Linear(backbone.embed_dims[-1], 1000)
    assert round(n / 1e6, 2) == without_head
    assert round((n + sum(p.numel() for p in head.parameters())) / 1e6, 2) == with_head


def test_official_structure_details():
    model = CvT(arch='cvt-13')
    assert not any('pos_embed' in k for k in model.state_dict())
    assert [s.cls_token is not None for s in model.stages] == [False, False, True]
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == 3 * 13
    block = model.stages[2].blocks[0]
    assert block.attn.scale == 384 ** -0.5
    assert block.attn.conv_proj.k.conv.stride == (2, 2)
    assert block.attn.conv_proj.q.conv.stride == (1, 1)
    assert type(block.mlp.act).__name__ == 'QuickGELU'
    assert all(m.eps == 1e-5 for m in model.modules() if isinstance(m, nn.LayerNorm))


def test_stochastic_depth_rises_within_each_stage():
    model = CvT(arch='cvt-13')
    rates = [[getattr(b.drop_path, 'drop_prob', 0.) for b in s.blocks] for s in model.stages]
    assert rates[0] == [0.] and rates[1] == [0., 0.]
    assert rates[2][0] == 0. and rates[2][-1] == pytest.approx(0.1)
    assert rates[2][1] == pytest.approx(0.1 / 9)
    custom = CvT(arch='cvt-13', drop_path_rate=[0.0, 0.2, 0.3])
    assert custom.stages[1].blocks[1].drop_path.drop_prob == pytest.approx(0.2)


def test_official_initialisation():
    torch.manual_seed(0)
    model = CvT(arch='cvt-13')
    model.init_weights()
    fc1 = model.stages[2].blocks[0].mlp.fc1
    assert fc1.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert torch.all(fc1.bias == 0)
    assert model.stages[2].cls_token.std().item() == pytest.approx(0.02, rel=0.3)
    # convolutions keep PyTorch's kaiming-uniform default (not re-initialised)
    embed = model.stages[0].patch_embed.projection.weight
    assert embed.std().item() == pytest.approx((1 / (3 * 3 * 49)) ** 0.5, rel=0.1)


def test_any_input_size_is_supported_down_to_minimum():
    model = CvT(arch=TINY).eval()
    assert model.min_input_size() == 3
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 3, 250))
    assert [o.shape[2:] for o in outs] == [(1, 62), (1, 31), (1, 16)]


def test_cls_token_output():
    model = CvT(arch=TINY, out_type='cls_token').eval()
    (cls,) = model(torch.randn(3, 3, 40, 56))
    assert cls.shape == (3, 48)
    assert not hasattr(model, 'norm0')


def test_out_indices_select_stages():
    model = CvT(arch=TINY, out_indices=(1, -1)).eval()
    outs = model(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == [32, 48]
    assert hasattr(model, 'norm1') and not hasattr(model, 'norm0')


def test_kv_stride_option():
    model = CvT(arch=TINY, kv_strides=[4, 2, 2])
    assert model.stages[0].blocks[0].attn.conv_proj.k.conv.stride == (4, 4)
    model.eval()
    assert model(torch.randn(1, 3, 61, 83))[0].shape == (1, 16, 15, 21)


def test_frozen_stages():
    model = CvT(arch=TINY, frozen_stages=2)
    model.train()
    for i in (0, 1):
        assert not any(p.requires_grad for p in model.stages[i].parameters())
        assert not any(p.requires_grad for p in getattr(model, f'norm{i}').parameters())
        assert not model.stages[i].training
    assert all(p.requires_grad for p in model.stages[2].parameters())
    bn = model.stages[1].blocks[0].attn.conv_proj.q.bn
    before = bn.running_mean.clone()
    model(torch.randn(2, 3, 64, 64))
    assert torch.equal(bn.running_mean, before)
    assert model.stages[2].training


def test_norm_eval_keeps_batchnorm_statistics():
    model = CvT(arch=TINY, norm_eval=True)
    model.train()
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(not m.training for m in bns)
    before = [m.running_var.clone() for m in bns]
    model(torch.randn(2, 3, 64, 64))
    assert all(torch.equal(m.running_var, b) for m, b in zip(bns, before))
    plain = CvT(arch=TINY).train()
    assert all(m.training for m in plain.modules() if isinstance(m, nn.BatchNorm2d))


def test_with_cp_gives_identical_gradients_and_statistics():
    torch.manual_seed(0)
    ref = CvT(arch=TINY)
    ref.init_weights()
    cp_model = CvT(arch=TINY, with_cp=True)
    cp_model.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3, 48, 72)
    for model in (ref, cp_model):
        model.train()
        sum(o.pow(3).mean() for o in model(x)).backward()
    for (name, p), q in zip(ref.named_parameters(), cp_model.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-6, atol=1e-7, msg=name)
    for (name, b), c in zip(ref.named_buffers(), cp_model.buffers()):
        assert torch.equal(b, c), name


def test_drop_path_is_active_only_in_training():
    model = CvT(arch=TINY, drop_path_rate=[0., 0., 0.5])
    x = torch.randn(4, 3, 48, 48)
    with torch.no_grad():
        model.train()
        torch.manual_seed(0)
        a = model(x)[-1]
        torch.manual_seed(1)
        b = model(x)[-1]
        assert not torch.equal(a, b)  # a different block dropped for some images
        model.eval()
        assert torch.equal(model(x)[-1], model(x)[-1])
    without = CvT(arch=TINY).train()
    without.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.manual_seed(0)
        c = without(x)[-1]
        torch.manual_seed(1)
        assert torch.equal(c, without(x)[-1])  # no stochastic depth: training is deterministic


# ----------------------------------------------------------------------------- bad input
def test_unknown_arch_lists_valid_presets():
    with pytest.raises(ValueError, match=r"cvt-13.*cvt-21.*cvt-w24"):
        CvT(arch='cvt-99')


def test_inconsistent_custom_arch_names_the_field():
    with pytest.raises(ValueError, match='depths'):
        CvT(arch=dict(embed_dims=[16, 32, 48], depths=[1, 1], num_heads=[1, 2, 3]))
    with pytest.raises(ValueError, match='num_heads'):
        CvT(arch=dict(embed_dims=[16, 32]))
    with pytest.raises(ValueError, match='not divisible'):
        CvT(arch=dict(embed_dims=[16, 30, 48], depths=[1, 1, 1], num_heads=[1, 4, 3]))
    with pytest.raises(ValueError, match='depth_typo'):
        CvT(arch=dict(TINY, depth_typo=1))


@pytest.mark.parametrize('kwargs, match', [
    (dict(out_indices=(0, 3)), 'out_indices entry 3'),
    (dict(frozen_stages=4), r'frozen_stages must be in \[-1, 3\]'),
    (dict(out_type='tokens'), 'out_type must be one of'),
    (dict(out_type='cls_token', out_indices=(0,)), 'class token'),
    (dict(drop_path_rate=[0., 0., -1.]), r'drop_path_rate must be numbers >= 0'),
    (dict(drop_path_rate=1.), r'drop_path_rate must be in \[0, 1\)'),
    (dict(drop_path_rate=[0.1, 0.2]), 'one value per stage'),
    (dict(kv_strides=[2, 2, 0]), 'kv_strides must be integers >= 1'),
    (dict(kv_strides=1.5), 'kv_strides must be integers'),
])
def test_bad_options_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CvT(arch=TINY, **kwargs)


def test_bad_inputs_are_named():
    model = CvT(arch=TINY).eval()
    with pytest.raises(ValueError, match=r'4-D input.*\(3, 64, 64\)'):
        model(torch.randn(3, 64, 64))
    with pytest.raises(ValueError, match='in_channels=3, but the input has 1 channels'):
        model(torch.randn(2, 1, 64, 64))
    with pytest.raises(ValueError, match='too small.*at least 3 pixels'):
        model(torch.randn(1, 3, 2, 64))
    with pytest.raises(TypeError, match='torch.Tensor'):
        model([torch.randn(1, 3, 64, 64)])


def test_builds_on_the_meta_device_without_memory():
    with torch.device('meta'):
        model = CvT(arch='cvt-w24')
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 2) == 276.17


def test_a_single_drop_path_rate_is_the_official_pattern():
    """``drop_path_rate=0.1`` (what Swin and ViT configs write) is the last stage's rate, as
    the official presets have it; the signature says so."""
    import inspect
    assert 'drop_path_rate' in inspect.signature(CvT).parameters
    model = CvT(arch=TINY, drop_path_rate=0.1)
    rates = [[getattr(b.drop_path, 'drop_prob', 0.) for b in s.blocks] for s in model.stages]
    assert rates == [[0.], [0.], [0., pytest.approx(0.1)]]


def test_unknown_arguments_are_named():
    """kv_strides is an argument, not an arch key."""
    with pytest.raises(TypeError, match="unexpected keyword argument 'no_such_option'"):
        CvT(arch=TINY, no_such_option=False)
    with pytest.raises(ValueError, match=r"Unknown keys \['kv_strides'\]"):
        CvT(arch=dict(TINY, kv_strides=[1, 1, 1]))
    model = CvT(arch=TINY, kv_strides=[1, 2, 4])
    assert [s.blocks[0].attn.conv_proj.k.conv.stride[0] for s in model.stages] == [1, 2, 4]


def test_defaults_follow_the_number_of_stages():
    two = CvT(arch=dict(embed_dims=[16, 32], depths=[1, 1], num_heads=[1, 2]))
    assert two.arch['patch_sizes'] == [7, 3] and two.arch['patch_strides'] == [4, 2]
    assert two.arch['cls_token'] == [False, True]
    assert [f.shape[1] for f in two(torch.randn(1, 3, 32, 32))] == [16, 32]
    four = CvT.parse_arch(dict(embed_dims=[8, 16, 24, 32], depths=[1] * 4, num_heads=[1] * 4))
    assert four['patch_paddings'] == [2, 1, 1, 1]


def test_outputs_are_described_without_building():
    assert CvT.describe_outputs('cvt-w24') == [
        dict(num_chs=192, stage=0, reduction=4, module='norm0'),
        dict(num_chs=768, stage=1, reduction=8, module='norm1'),
        dict(num_chs=1024, stage=2, reduction=16, module='norm2')]
    assert CvT.describe_outputs('cvt-13', out_type='cls_token') == [
        dict(num_chs=384, stage=2, reduction=16, module='cls_norm')]
    model = CvT(arch=TINY, out_indices=(1, -1))
    assert model.feature_info == CvT.describe_outputs(TINY, (1, 2))
    with pytest.raises(ValueError, match='out_indices entry 5'):
        CvT.describe_outputs('cvt-13', (5,))


def test_pretrained_argument_as_mmseg_passes_it(tmp_path):
    model = CvT(arch=TINY, pretrained=str(tmp_path / 'w.pth'))
    assert model.init_cfg == dict(type='Pretrained', checkpoint=str(tmp_path / 'w.pth'))
    with pytest.raises(ValueError, match='both pretrained and init_cfg'):
        CvT(arch=TINY, pretrained='a.pth', init_cfg=dict(type='Pretrained', checkpoint='b'))
