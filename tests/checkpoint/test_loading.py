"""Loading CvT weights: every format on every loader, completely or not at all."""
import pytest
import torch
from mmengine.runner import load_checkpoint

from cvt_backbone import CheckpointError, CvT, convert_official_cvt
from cvt_backbone.checkpoint import canonical_checkpoint, detect_format, diff_state_dict
import cvt_backbone.engine  # noqa: F401  (MMEngine's loaders, as the configs set them up)
from tests.helpers import TINY, make_official


def test_official_keys_convert_to_ours(tmp_path):
    src, state, _ = make_official(tmp_path)
    assert detect_format(state) == 'official'
    converted = convert_official_cvt(state)
    assert 'stages.0.patch_embed.projection.weight' in converted
    assert 'stages.2.blocks.1.attn.conv_proj.v.bn.running_var' in converted
    assert 'cls_norm.weight' in converted and 'head.weight' in converted
    assert set(src.state_dict()) == set(converted) - {'head.weight', 'head.bias'}


def test_unknown_keys_of_a_format_are_named():
    with pytest.raises(CheckpointError, match=r'official format: unexpected keys stage0\.typo'):
        convert_official_cvt({'stage0.patch_embed.proj.weight': torch.zeros(1),
                              'stage0.typo': torch.zeros(1)})


@pytest.mark.parametrize('out_type', ['featmap', 'cls_token'])
def test_official_checkpoint_loads_through_every_loader(tmp_path, out_type):
    src, state, path = make_official(tmp_path)
    src.eval()
    x = torch.randn(1, 3, 64, 64)

    def same(model):
        for key, value in src.state_dict().items():
            if key in model.state_dict():
                assert torch.equal(model.state_dict()[key], value), key
        if out_type == 'cls_token':
            assert torch.equal(src(x)[0], model.eval()(x)[0])

    by_init_cfg = CvT(arch=TINY, out_type=out_type,
                      init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    by_init_cfg.init_weights()
    same(by_init_cfg)
    by_load_state_dict = CvT(arch=TINY, out_type=out_type)
    by_load_state_dict.load_state_dict(state, strict=True)
    same(by_load_state_dict)
    by_load_checkpoint = CvT(arch=TINY, out_type=out_type)
    load_checkpoint(by_load_checkpoint, str(path), strict=True)
    same(by_load_checkpoint)
    by_pretrained = CvT(arch=TINY, out_type=out_type, pretrained=str(path))
    by_pretrained.init_weights()
    same(by_pretrained)


def test_whole_model_checkpoints_give_their_backbone(tmp_path):
    torch.manual_seed(1)
    src = CvT(arch=TINY)
    state = {f'backbone.{k}': v for k, v in src.state_dict().items()}
    state['neck.conv.weight'] = torch.zeros(1)
    path = tmp_path / 'detector.pth'
    torch.save({'meta': {'epoch': 3}, 'state_dict': state}, path)
    for model in (CvT(arch=TINY, init_cfg=dict(type='Pretrained', checkpoint=str(path))),
                  CvT(arch=TINY)):
        if model.init_cfg:
            model.init_weights()
        else:
            load_checkpoint(model, str(path))
        assert all(torch.equal(v, src.state_dict()[k]) for k, v in model.state_dict().items())


def test_a_checkpoint_of_another_arch_is_refused_and_nothing_loads(tmp_path):
    _, _, path = make_official(tmp_path)
    model = CvT(arch=dict(embed_dims=[16, 32, 64], depths=[1, 1, 2], num_heads=[1, 2, 4]),
                init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match=r'official.pth.*does not fit.*shape mismatch.*'
                                              r'stages\.2\..*\(48,\).*\(64,\)'):
        model.init_weights()
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    deeper = CvT(arch=dict(TINY, depths=[1, 1, 3]),
                 init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    with pytest.raises(CheckpointError, match=r'missing keys stages\.2\.blocks\.2\.'):
        deeper.init_weights()


def test_foreign_state_dict_is_refused(tmp_path):
    path = tmp_path / 'resnet.pth'
    torch.save({'conv1.weight': torch.zeros(8, 3, 7, 7), 'fc.weight': torch.zeros(2, 8)}, path)
    model = CvT(arch=TINY, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    with pytest.raises(CheckpointError, match=r'resnet.pth.*does not fit.*unexpected keys '
                                              r'conv1.weight'):
        model.init_weights()


def test_no_keys_under_an_explicit_prefix_is_named(tmp_path):
    _, _, path = make_official(tmp_path)
    model = CvT(arch=TINY, init_cfg=dict(type='Pretrained', checkpoint=str(path),
                                         prefix='backbone.'))
    with pytest.raises(CheckpointError, match="no keys under the prefix 'backbone.'"):
        model.init_weights()


def test_canonical_layout_is_an_mmpretrain_classifier(tmp_path):
    _, state, _ = make_official(tmp_path)
    canonical = canonical_checkpoint(state, 'x')
    keys = set(canonical['state_dict'])
    assert 'backbone.stages.0.patch_embed.projection.weight' in keys
    assert {'head.fc.weight', 'head.fc.bias', 'backbone.cls_norm.weight'} <= keys
    assert canonical['meta']['cvt_format'] == 'official'
    assert canonical['meta']['arch']['embed_dims'] == TINY['embed_dims']
    ours = {'state_dict': {'w': torch.zeros(1)}}
    assert canonical_checkpoint(ours, 'x') is ours


def test_state_dict_diff_names_each_kind_of_difference():
    diff = diff_state_dict({'a': torch.zeros(2), 'b': torch.zeros(1)},
                           {'a': torch.zeros(3), 'c': torch.zeros(1)})
    assert diff.missing == ['b'] and diff.unexpected == ['c']
    assert diff.describe() == ('shape mismatch for a: checkpoint (3,) vs model (2,); missing '
                               'keys b; unexpected keys c')
    assert not diff_state_dict({'a': torch.zeros(1)}, {'a': torch.ones(1)})
