"""tools/model_converters/cvt2mmpretrain.py: published CvT weights into mmpretrain.

The official weights are stood in for by the transformers port (QuickGELU swapped in, weights
renamed to the official keys), so the round trip ends in a comparison with an independent
implementation: port -> official file -> converter -> the classifier of
configs/cvt/cvt-13_8xb256_in1k-224px.py. The port's own ``save_pretrained`` folder goes
through the converter the same way.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmpretrain.registry import MODELS

from cvt_backbone import CvT, read_checkpoint
from cvt_backbone.checkpoint import convert_keys
from tests import helpers
from tests.helpers import ROOT, build_port, call_tool, load_script, official_keys

pytestmark = pytest.mark.slow  # tool subprocesses, end to end

converter = load_script('model_converters/cvt2mmpretrain.py')

pytest.importorskip('transformers')

CONFIG = ROOT / 'configs' / 'cvt' / 'cvt-13_8xb256_in1k-224px.py'


def run_tool(*args: object) -> subprocess.CompletedProcess:
    """Run the converter as a command, as a user would."""
    return helpers.run_tool('model_converters/cvt2mmpretrain.py', *args)


@pytest.fixture(autouse=True, scope='module')
def one_thread():
    """One thread: on a busy 2-core machine two threads made these CPU runs much slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope='module')
def port():
    """A random CvT-13 of the transformers port with a 1000-class head, QuickGELU inside."""
    return build_port('cvt-13', num_labels=1000, seed=5)


@pytest.fixture(scope='module')
def official(port, tmp_path_factory) -> Path:
    """The port's weights saved under the official key names, as a plain state dict."""
    path = tmp_path_factory.mktemp('official') / 'CvT-13-224x224-IN-1k.pth'
    torch.save(official_keys(convert_keys(port.state_dict(), 'transformers')), path)
    return path


@pytest.fixture(scope='module')
def converted(official) -> tuple[Path, subprocess.CompletedProcess]:
    """The converter run as a command on the official file."""
    dst = official.parent / 'out' / 'cvt-13_in1k-224px.pth'
    return dst, run_tool(official, dst)


@pytest.fixture(scope='module')
def classifier(converted):
    """The classifier of the 224 config with the converted weights, loaded strictly."""
    model = MODELS.build(Config.fromfile(str(CONFIG)).model)
    model.load_state_dict(read_checkpoint(converted[0])['state_dict'], strict=True)
    return model.eval()


def relative_max_error(ours: torch.Tensor, ref: torch.Tensor) -> float:
    """``max |ours - ref| / max |ref|``."""
    assert ours.shape == ref.shape
    return ((ours - ref).abs().max() / ref.abs().max()).item()


def test_command_converts_and_reports(converted):
    dst, result = converted
    assert result.returncode == 0, result.stderr
    assert "arch 'cvt-13'" in result.stdout and 'head with 1000 classes' in result.stdout
    assert result.stdout.rstrip().endswith('Done')
    checkpoint = read_checkpoint(dst)
    assert checkpoint['meta'] == dict(arch='cvt-13', source='CvT-13-224x224-IN-1k.pth',
                                      source_format='official', backbone_only=False,
                                      num_classes=1000, converter='cvt2mmpretrain')
    keys = list(checkpoint['state_dict'])
    assert all(k.startswith(('backbone.', 'head.fc.')) for k in keys)
    assert 'backbone.cls_norm.weight' in keys and 'head.fc.bias' in keys
    assert os.listdir(dst.parent) == [dst.name]  # no temporary file left


@pytest.mark.parametrize('hw', [(224, 224), (160, 248)])
def test_logits_match_the_port(port, classifier, hw):
    x = torch.randn(2, 3, *hw, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        ours = classifier(x, mode='tensor')
        ref = port(x).logits
    error = relative_max_error(ours, ref)
    print(f'relative max error of the logits at {hw[0]}x{hw[1]}: {error:.2e}')
    assert error <= 1e-4


@pytest.mark.parametrize('wrap', ['state_dict', 'model', 'module.'])
def test_wrapped_official_checkpoints(official, converted, tmp_path, wrap):
    state = torch.load(official, weights_only=True)
    if wrap == 'module.':
        wrapped = {f'module.{k}': v for k, v in state.items()}
    else:
        wrapped = {wrap: state, 'epoch': 300}
    src, dst = tmp_path / 'wrapped.pth', tmp_path / 'out.pth'
    torch.save(wrapped, src)
    assert call_tool(converter.main, [str(src), str(dst), '--arch', 'cvt-13']) == 0
    ours, ref = read_checkpoint(dst)['state_dict'], read_checkpoint(converted[0])
    assert list(ours) == list(ref['state_dict'])
    assert all(torch.equal(ours[k], v) for k, v in ref['state_dict'].items())


def test_backbone_only_loads_into_a_featmap_backbone(official, classifier, tmp_path, capsys):
    dst = tmp_path / 'cvt-13_backbone.pth'
    assert call_tool(converter.main, [str(official), str(dst), '--backbone-only']) == 0
    assert '(backbone only)' in capsys.readouterr().out
    checkpoint = read_checkpoint(dst)
    assert checkpoint['meta']['backbone_only'] and checkpoint['meta']['arch'] == 'cvt-13'
    state = checkpoint['state_dict']
    assert not any(k.startswith(('backbone.', 'head.')) for k in state)
    assert 'cls_norm.weight' in state

    reference = classifier.backbone.state_dict()
    featmap = CvT(arch='cvt-13', out_type='featmap',
                  init_cfg=dict(type='Pretrained', checkpoint=str(dst)))
    featmap.init_weights()
    for key, value in featmap.state_dict().items():
        if not key.startswith('norm'):  # the per-stage output norms are new
            assert torch.equal(value, reference[key]), key

    # and into a class-token backbone, with its final norm: same features as the classifier
    cls_token = CvT(arch='cvt-13', out_type='cls_token',
                    init_cfg=dict(type='Pretrained', checkpoint=str(dst)))
    cls_token.init_weights()
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        assert torch.equal(cls_token.eval()(x)[0], classifier.backbone(x)[0])


def test_not_a_cvt_checkpoint_fails_cleanly(tmp_path):
    src, dst = tmp_path / 'resnet50.pth', tmp_path / 'out.pth'
    torch.save({'conv1.weight': torch.zeros(64, 3, 7, 7), 'fc.bias': torch.zeros(1000)}, src)
    result = run_tool(src, dst)
    assert result.returncode == 1
    assert result.stderr.startswith('error: ')
    assert 'is not a CvT checkpoint' in result.stderr and 'conv1.weight' in result.stderr
    assert 'Traceback' not in result.stderr
    assert not dst.exists()


def test_wrong_arch_fails_and_keeps_the_output_file(official, tmp_path, capsys):
    dst = tmp_path / 'out.pth'
    dst.write_bytes(b'previous')
    assert call_tool(converter.main, [str(official), str(dst), '--arch', 'cvt-21']) == 1
    error = capsys.readouterr().err
    assert error.startswith('error: ')
    assert 'is a cvt-13 checkpoint (embed_dims [64, 192, 384], depths [1, 2, 10]), not cvt-21' \
        in error
    assert dst.read_bytes() == b'previous' and os.listdir(tmp_path) == ['out.pth']


@pytest.mark.parametrize('case, message', [
    ('no head', 'has no classifier head; convert it with --backbone-only'),
    ('other arch', 'is a CvT checkpoint with embed_dims [64, 192, 384] and depths [1, 2, 9], '
                   'which is none of the presets'),
    ('text', 'garbage.pth'),
    ('folder', 'holds no weights'),
    ('missing', 'does not exist'),
    # a kernel that only its last dimension states: 0.8 MB in the file, a 6 GB convolution
    ('flat kernel', 'has shape (64, 3, 1, 4001), not that of a square convolution'),
    ('no convolution', 'has shape (), not that of a square convolution'),
    ('other block', "does not fit CvT(arch='cvt-13'): shape mismatch for "
                    'stages.2.blocks.3.attn.conv_proj.q.conv.weight'),
])
def test_other_bad_inputs(official, converted, tmp_path, capsys, case, message):
    state = torch.load(official, weights_only=True)
    src = tmp_path / 'garbage.pth'
    if case == 'no head':
        torch.save({k: v for k, v in state.items() if not k.startswith('head.')}, src)
    elif case == 'other arch':
        torch.save({k: v for k, v in state.items() if not k.startswith('stage2.blocks.9.')}, src)
    elif case == 'text':
        src.write_text('not a checkpoint\n')
    elif case == 'folder':
        src = tmp_path / 'folder'
        src.mkdir()
    elif case in ('flat kernel', 'no convolution', 'other block'):
        embedding = 'stage0.patch_embed.proj.weight'
        key, value = {'flat kernel': (embedding, torch.zeros(64, 3, 1, 4001)),
                      'no convolution': (embedding, torch.tensor(0.)),
                      'other block': ('stage2.blocks.3.attn.conv_proj_q.conv.weight',
                                      torch.zeros(384, 1, 9, 9))}[case]
        torch.save({**state, key: value}, src)
    assert call_tool(converter.main, [str(src), str(tmp_path / 'out.pth')]) == 1
    error = capsys.readouterr().err
    assert error.startswith('error: ') and message in error
    assert not (tmp_path / 'out.pth').exists()


def test_own_checkpoints_convert_again_and_to_safetensors(converted, classifier, tmp_path):
    """This project's classifier checkpoint reads back; as .safetensors it loads the same."""
    dst = tmp_path / 'cvt-13.safetensors'
    assert call_tool(converter.main, [str(converted[0]), str(dst)]) == 0
    flat = read_checkpoint(dst)
    ref = read_checkpoint(converted[0])['state_dict']
    assert set(flat) == set(ref) and all(torch.equal(flat[k], v) for k, v in ref.items())
    model = MODELS.build(Config.fromfile(str(CONFIG)).model)
    from mmengine.runner import load_checkpoint
    load_checkpoint(model, str(dst), strict=True)


def test_a_transformers_folder_converts_with_its_config_checked(port, tmp_path):
    port.save_pretrained(tmp_path / 'cvt-13')
    dst = tmp_path / 'out.pth'
    assert call_tool(converter.main, [str(tmp_path / 'cvt-13'), str(dst), '--arch', 'cvt-13']) == 0
    assert read_checkpoint(dst)['meta']['source_format'] == 'transformers'
    config = tmp_path / 'cvt-13' / 'config.json'
    config.write_text(config.read_text().replace('"num_heads": [\n    1,',
                                                 '"num_heads": [\n    2,'))
    result = run_tool(tmp_path / 'cvt-13', tmp_path / 'other.pth')
    assert result.returncode == 1
    assert 'config.json describes another arch than its weights: num_heads [2, 3, 6]' \
        in result.stderr
