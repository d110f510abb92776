"""Loading weights: official key conversion on the fly, safe unpickling, clear refusals."""
import os
import re

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer

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


# ----------------------------------------------------------------------------- the allow-list
def save_training_state(path, numpy_version_names: bool = False):
    """Save what MMEngine's Runner puts in a checkpoint besides tensors: the message hub.

    As measured on mmpretrain, mmdet and mmseg runs: HistoryBuffers of float64 logs and int64
    counts, a float64 ``eta`` and (mmseg) a float32 ``best_score``.
    """
    from mmengine.logging import MessageHub
    from mmengine.runner import save_checkpoint
    hub = MessageHub(f'hub-{path.name}')
    hub.update_scalar('train/loss', 1.25)
    hub.update_scalar('train/loss', 0.75)
    hub.update_info('eta', np.float64(12.5))
    hub.update_info('best_score', np.float32(0.5))
    save_checkpoint({'meta': {'epoch': 1, 'iter': 2}, 'state_dict': {'w': torch.ones(2)},
                     'message_hub': hub.state_dict()}, str(path))


def test_training_state_needs_each_allowed_global(tmp_path, monkeypatch):
    import cvt_backbone.checkpoint as ckpt
    path = tmp_path / 'epoch_1.pth'
    save_training_state(path)
    state = load_checkpoint_file(path)
    hub = state['message_hub']
    assert hub['log_scalars']['train/loss'].mean() == 1.0
    assert hub['runtime_info']['best_score'] == np.float32(0.5)
    full = list(ckpt.SAFE_GLOBALS)
    numpy1_names = [g for g in full if isinstance(g, tuple) and g[1].startswith('numpy.core.')]
    for entry in full:
        if entry in numpy1_names:
            continue
        monkeypatch.setattr(ckpt, 'SAFE_GLOBALS', [g for g in full if g is not entry])
        with pytest.raises(CheckpointError, match='Refused to load checkpoint'):
            load_checkpoint_file(path)


def test_checkpoint_written_with_numpy_1_loads(tmp_path):
    """numpy 1 pickled arrays and scalars from ``numpy.core.multiarray`` (numpy 2:
    ``numpy._core``); the legacy (non-zip) format keeps the pickle editable in place."""
    state = {'log': np.array([1.5, 2.5]), 'eta': np.float64(3.0), 'w': torch.arange(3.)}
    path = tmp_path / 'numpy1.pth'
    torch.save(state, path, _use_new_zipfile_serialization=False)
    data = path.read_bytes()
    assert b'numpy._core.multiarray\n' in data
    path.write_bytes(data.replace(b'numpy._core.multiarray\n', b'numpy.core.multiarray\n'))
    loaded = load_checkpoint_file(path)
    assert loaded['log'].tolist() == [1.5, 2.5] and loaded['eta'] == 3.0
    assert torch.equal(loaded['w'], torch.arange(3.))


class _Lookup:
    """Pickles as ``getattr(owner, name)``."""

    def __init__(self, owner, name):
        self.owner, self.name = owner, name

    def __reduce__(self):
        return (getattr, (self.owner, self.name))


@pytest.mark.parametrize('owner, name', [
    (HistoryBuffer, 'update'), (HistoryBuffer, '__init__'), (np.ndarray, 'tofile')])
def test_getattr_reaches_only_the_history_buffer_statistics(tmp_path, owner, name):
    path = tmp_path / 'lookup.pth'
    torch.save({'ok': _Lookup(HistoryBuffer, 'mean'), 'bad': _Lookup(owner, name)}, path)
    with pytest.raises(CheckpointError, match=rf'lookup.pth.*getattr\(.*{name}'):
        load_checkpoint_file(path)
    torch.save({'ok': _Lookup(HistoryBuffer, 'mean')}, path)
    assert load_checkpoint_file(path)['ok'] is HistoryBuffer.mean


def test_url_checkpoints_are_read_safely(tmp_path, monkeypatch):
    """``load_from`` / ``load_checkpoint`` with an http(s) URL: MMEngine downloads through
    torch.hub (here faked by a copy) and must not unpickle the download unsafely."""
    import shutil

    from mmengine.runner import load_checkpoint
    marker = tmp_path / 'pwned'
    served = {'evil.pth': tmp_path / 'served_evil.pth', 'good.pth': tmp_path / 'served_good.pth'}
    torch.save({'state_dict': {'x': torch.zeros(1)}, 'extra': _Payload(marker)},
               served['evil.pth'])
    torch.manual_seed(3)
    src = CvT(arch=TINY)
    torch.save({'state_dict': src.state_dict()}, served['good.pth'])
    monkeypatch.setattr(torch.hub, 'download_url_to_file',
                        lambda url, dst, *args, **kwargs: shutil.copy(
                            served[url.rsplit('/', 1)[1]], dst))
    torch.hub.set_dir(str(tmp_path / 'hub'))
    model = CvT(arch=TINY)
    with pytest.raises(CheckpointError, match=r'Refused.*https://example.invalid/evil.pth'):
        load_checkpoint(model, 'https://example.invalid/evil.pth')
    assert not marker.exists()
    load_checkpoint(model, 'https://example.invalid/good.pth', strict=True)
    assert all(torch.equal(v, src.state_dict()[k]) for k, v in model.state_dict().items())


def test_converter_refuses_a_pickle_with_code(tmp_path, capsys):
    import importlib.util
    from pathlib import Path
    tool = (Path(__file__).resolve().parents[1] / 'tools' / 'model_converters'
            / 'cvt_official_to_mmpretrain.py')
    spec = importlib.util.spec_from_file_location('cvt_converter', tool)
    converter = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(converter)
    marker, path = tmp_path / 'pwned', tmp_path / 'evil.pth'
    torch.save({'stage0.patch_embed.proj.weight': torch.zeros(1), 'x': _Payload(marker)}, path)
    assert converter.main([str(path), str(tmp_path / 'out.pth')]) == 1
    assert re.search(r'error: Refused to load checkpoint .*evil.pth', capsys.readouterr().err)
    assert not marker.exists() and not (tmp_path / 'out.pth').exists()


def test_truncated_zip_tail_and_garbage_are_named(tmp_path):
    good = tmp_path / 'good.pth'
    torch.save({'w': torch.randn(1000)}, good)
    data = good.read_bytes()
    for name, content in (('tail.pth', data[:-100]), ('garbage.pth', os.urandom(4096)),
                          ('text.pth', b'not a checkpoint\n')):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(CheckpointError, match=rf'{name}.*truncated or corrupt'):
            load_checkpoint_file(tmp_path / name)
