"""Loading weights: official key conversion on the fly, safe unpickling, clear refusals."""
import os

import pytest
import torch

from cvt_backbone import CheckpointError, CvT, convert_official_cvt, load_checkpoint_file

TINY = dict(embed_dims=[16, 32, 48], depths=[1, 1, 2], num_heads=[1, 2, 3])


def make_official(tmp_path, seed=0):
    torch.manual_seed(seed)
    src = CvT(arch=TINY, out_type='cls_token')
    src.init_weights()
    state = {}
    for key, value in src.state_dict().items():
        key = key.replace('cls_norm.', 'norm.')
        if key.startswith('stages.'):
            _, index, rest = key.split('.', 2)
            key = f'stage{index}.{rest}'
        key = key.replace('.patch_embed.projection.', '.patch_embed.proj.')
        for s in 'qkv':
            key = key.replace(f'.attn.conv_proj.{s}.', f'.attn.conv_proj_{s}.')
        state[key] = value
    state['head.weight'] = torch.randn(10, 48)
    state['head.bias'] = torch.randn(10)
    path = tmp_path / 'official.pth'
    torch.save(state, path)
    return src, state, path


def test_official_keys_round_trip(tmp_path):
    src, state, _ = make_official(tmp_path)
    converted = convert_official_cvt(state)
    assert 'stages.0.patch_embed.projection.weight' in converted
    assert 'stages.2.blocks.1.attn.conv_proj.v.bn.running_var' in converted
    assert 'cls_norm.weight' in converted and 'head.weight' in converted
    ours = {k: v for k, v in src.state_dict().items()}
    assert set(ours) == set(converted) - {'head.weight', 'head.bias'}


@pytest.mark.parametrize('out_type', ['featmap', 'cls_token'])
def test_init_cfg_loads_official_checkpoint_on_the_fly(tmp_path, out_type):
    src, _, path = make_official(tmp_path)
    model = CvT(arch=TINY, out_type=out_type,
                init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    for key, value in src.state_dict().items():
        if key in model.state_dict():
            assert torch.equal(model.state_dict()[key], value), key
    if out_type == 'cls_token':
        src.eval(), model.eval()
        x = torch.randn(1, 3, 64, 64)
        assert torch.equal(src(x)[0], model(x)[0])


def test_loads_whole_model_checkpoint_with_backbone_prefix(tmp_path):
    torch.manual_seed(1)
    src = CvT(arch=TINY)
    state = {f'backbone.{k}': v for k, v in src.state_dict().items()}
    state['neck.conv.weight'] = torch.zeros(1)
    path = tmp_path / 'detector.pth'
    torch.save({'meta': {'epoch': 3}, 'state_dict': state}, path)
    model = CvT(arch=TINY, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    for key, value in src.state_dict().items():
        assert torch.equal(model.state_dict()[key], value)


def test_wrong_arch_checkpoint_names_keys_and_shapes(tmp_path):
    _, _, path = make_official(tmp_path)
    model = CvT(arch=dict(embed_dims=[16, 32, 64], depths=[1, 1, 2], num_heads=[1, 2, 4]),
                init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    with pytest.raises(CheckpointError, match=r'official.pth.*does not fit.*shape mismatch.*'
                                              r'stages\.2\..*\(48,\).*\(64,\)'):
        model.init_weights()
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


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f'touch {self.marker}',))


def test_pickle_with_code_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / 'pwned'
    path = tmp_path / 'evil.pth'
    torch.save({'state_dict': {'x': torch.zeros(1)}, 'extra': _Payload(marker)}, path)
    with pytest.raises(CheckpointError, match=r'Refused to load checkpoint .*evil.pth.*system'):
        load_checkpoint_file(path)
    model = CvT(arch=TINY, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    with pytest.raises(CheckpointError, match='Refused'):
        model.init_weights()
    from mmengine.runner import load_checkpoint
    with pytest.raises(CheckpointError, match='Refused'):
        load_checkpoint(model, str(path))
    assert not marker.exists()


def test_unreadable_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        load_checkpoint_file(tmp_path / 'nope.pth')
    with pytest.raises(CheckpointError, match='is a directory'):
        load_checkpoint_file(tmp_path)
    empty = tmp_path / 'empty.pth'
    empty.write_bytes(b'')
    with pytest.raises(CheckpointError, match=r'empty.pth.*empty \(0 bytes\)'):
        load_checkpoint_file(empty)
    good = tmp_path / 'good.pth'
    torch.save({'w': torch.randn(1000)}, good)
    cut = tmp_path / 'cut.pth'
    cut.write_bytes(good.read_bytes()[:2000])
    with pytest.raises(CheckpointError, match=r'cut.pth.*truncated or corrupt'):
        load_checkpoint_file(cut)
