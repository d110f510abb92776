"""The transformers form of the published weights, on every loader, safely.

A randomly initialised ``CvtForImageClassification`` (non-trivial norm statistics, QuickGELU
swapped in as the published weights were trained) is written with ``save_pretrained`` as
safetensors and as ``pytorch_model.bin``, laid out like a hub repository, and loaded into
CvT from the folder, from each file, from a URL served on 127.0.0.1, through
``load_checkpoint`` and through ``load_state_dict``. Every stage map and the class token must
equal the port's within 1e-5 of their scale, and the converted classifier's logits the port's.
"""
import json
import shutil

import pytest
import torch
from mmengine.runner import load_checkpoint

from cvt_backbone import CheckpointError, CvT
from tests.checkpoint import crafted
from tests.helpers import PORTABLE, ROOT, build_port, relative_error, run_tool, serve

pytest.importorskip('transformers')
pytestmark = pytest.mark.usefixtures('safe_loading')  # load_checkpoint as configs have it

CLASSES = 7


@pytest.fixture(scope='module')
def port():
    return build_port(PORTABLE, num_labels=CLASSES, seed=3)


@pytest.fixture(scope='module')
def hub(port, tmp_path_factory):
    """``<root>/microsoft/cvt-t/resolve/main/`` with both weight files, and a bin-only copy."""
    root = tmp_path_factory.mktemp('hub')
    repo = root / 'microsoft' / 'cvt-t' / 'resolve' / 'main'
    port.save_pretrained(repo)
    port.save_pretrained(root / 'bin', safe_serialization=False)
    shutil.copy(root / 'bin' / 'pytorch_model.bin', repo)
    return root


@pytest.fixture(autouse=True)
def torch_hub(tmp_path, monkeypatch):
    torch.hub.set_dir(str(tmp_path / 'torch_hub'))
    yield
    monkeypatch.setattr(torch.hub, '_hub_dir', None)


def reference(port, x):
    with torch.no_grad():
        out = port.cvt(x, output_hidden_states=True)
        return list(out.hidden_states), port.layernorm(out.cls_token_value)[:, 0], port(x).logits


def stage_maps(model: CvT, x: torch.Tensor) -> list[torch.Tensor]:
    maps = []
    handles = [s.register_forward_hook(lambda _m, _i, out: maps.append(
        out[0].transpose(1, 2).reshape(out[0].shape[0], -1, *out[1]))) for s in model.stages]
    with torch.no_grad():
        model(x)
    for handle in handles:
        handle.remove()
    return maps


def assert_matches_port(model: CvT, port, x) -> None:
    maps, cls_token, _ = reference(port, x)
    for ours, ref in zip(stage_maps(model.eval(), x), maps):
        assert relative_error(ours, ref) < 1e-5
    if model.out_type == 'cls_token':
        with torch.no_grad():
            assert relative_error(model(x)[0], cls_token) < 1e-5


def sources(hub, base=None):
    repo = hub / 'microsoft' / 'cvt-t' / 'resolve' / 'main'
    local = {'folder': repo, 'bin folder': hub / 'bin', 'model.safetensors':
             repo / 'model.safetensors', 'pytorch_model.bin': repo / 'pytorch_model.bin'}
    if base is None:
        return {k: str(v) for k, v in local.items()}
    return {f'URL {name}': f'{base}/microsoft/cvt-t/resolve/main/{name}'
            for name in ('model.safetensors', 'pytorch_model.bin')}


@pytest.mark.parametrize('out_type', ['featmap', 'cls_token'])
def test_every_form_loads_through_init_cfg_and_load_checkpoint(port, hub, out_type):
    x = torch.randn(2, 3, 72, 88, generator=torch.Generator().manual_seed(0))
    with serve(hub) as base:
        for source in {**sources(hub), **sources(hub, base)}.values():
            model = CvT(arch=PORTABLE, out_type=out_type,
                        init_cfg=dict(type='Pretrained', checkpoint=source))
            model.init_weights()
            assert_matches_port(model, port, x)
            other = CvT(arch=PORTABLE, out_type=out_type)
            load_checkpoint(other, source, strict=out_type == 'cls_token')
            assert_matches_port(other, port, x)


def test_load_state_dict_takes_transformers_names(port):
    x = torch.randn(1, 3, 64, 80, generator=torch.Generator().manual_seed(1))
    model = CvT(arch=PORTABLE, out_type='cls_token')
    model.load_state_dict(port.state_dict(), strict=True)
    assert_matches_port(model, port, x)
    bare = CvT(arch=PORTABLE)
    bare.load_state_dict(port.cvt.state_dict(), strict=True)  # CvtModel: no head, no norm
    assert_matches_port(bare, port, x)


def test_converted_classifier_gives_the_ports_logits(port, hub, tmp_path):
    from mmpretrain.models import ImageClassifier
    with serve(hub) as base:
        url = sources(hub, base)['URL pytorch_model.bin']
        result = run_tool('model_converters/cvt2mmpretrain.py', url, tmp_path / 'cls.pth')
    assert result.returncode == 0, result.stderr
    classifier = ImageClassifier(
        backbone=dict(type='CvT', arch=PORTABLE, out_type='cls_token'),
        head=dict(type='LinearClsHead', num_classes=CLASSES, in_channels=48))
    load_checkpoint(classifier, str(tmp_path / 'cls.pth'), strict=True)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        logits = classifier.eval()(x, mode='tensor')
    assert relative_error(logits, reference(port, x)[2]) < 1e-5


def test_exact_gelu_is_not_the_function_of_these_weights(port):
    """The port as shipped (exact GELU) and QuickGELU differ on the same weights; ours
    computes the QuickGELU function the published weights were trained with."""
    shipped = build_port(PORTABLE, num_labels=CLASSES, seed=3, quick_gelu=False)
    shipped.load_state_dict(port.state_dict())
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    ours = CvT(arch=PORTABLE, out_type='cls_token')
    ours.load_state_dict(port.state_dict())
    maps = stage_maps(ours.eval(), x)
    assert relative_error(maps[-1], reference(port, x)[0][-1]) < 1e-5
    assert relative_error(maps[-1], reference(shipped, x)[0][-1]) > 1e-4  # 10x the tolerance


# ----------------------------------------------------------------------------- bad input
def refused(source, pattern, arch=PORTABLE):
    model = CvT(arch=arch, init_cfg=dict(type='Pretrained', checkpoint=source))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match=pattern) as error:
        model.init_weights()
    assert '\n' not in str(error.value)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_each_bad_source_is_named(hub, tmp_path):
    with serve(hub) as base:
        refused(f'{base}/nothing/here.bin', r'Could not download checkpoint http://127.0.0.1'
                                            r'.*/nothing/here.bin: HTTP 404')
    refused('http://127.0.0.1:9/cvt.bin', r'Could not download checkpoint http://127.0.0.1:9'
                                          r'/cvt.bin')
    (tmp_path / 'empty').mkdir()
    refused(str(tmp_path / 'empty'), r"folder '.*empty' holds no weights")
    other = tmp_path / 'other_arch'
    shutil.copytree(hub / 'bin', other)
    config = json.loads((other / 'config.json').read_text())
    (other / 'config.json').write_text(json.dumps(dict(config, num_heads=[1, 1, 1])))
    refused(str(other), r'other_arch.* is a CvT of another arch: num_heads \[1, 1, 1\] in the '
                        r'checkpoint vs \[1, 2, 3\] in the model')
    vit = tmp_path / 'vit'
    shutil.copytree(hub / 'bin', vit)
    (vit / 'config.json').write_text(json.dumps(dict(config, model_type='vit')))
    refused(str(vit), r"config.json' describes a transformers model of type 'vit', not a CvT")
    cut = tmp_path / 'cut.safetensors'
    data = (hub / 'microsoft' / 'cvt-t' / 'resolve' / 'main' / 'model.safetensors').read_bytes()
    cut.write_bytes(data[:len(data) // 2])
    refused(str(cut), r'safetensors file .*cut.safetensors.* truncated or corrupt')
    refused(str(crafted.os_system(tmp_path)), r'os_system.pth.*needs posix.system')


@pytest.mark.slow  # the tools in subprocesses
def test_a_code_running_bin_over_http_is_refused_on_every_path(tmp_path, shapes_cls):
    repo = tmp_path / 'served' / 'evil' / 'cvt' / 'resolve' / 'main'
    repo.mkdir(parents=True)
    crafted.os_system(repo).rename(repo / 'pytorch_model.bin')
    marker = repo / crafted.MARKER
    with serve(tmp_path / 'served') as base:
        url = f'{base}/evil/cvt/resolve/main/pytorch_model.bin'
        refused(url, r'Refused to load checkpoint .*pytorch_model.bin.*posix.system')
        with pytest.raises(CheckpointError, match='posix.system'):
            load_checkpoint(CvT(arch=PORTABLE), url)
        converter = run_tool('model_converters/cvt2mmpretrain.py', url, tmp_path / 'out.pth')
        assert converter.returncode == 1 and 'posix.system' in converter.stderr
        test_tool = run_tool('test.py', 'configs/demo/cvt-tiny_shapes-cls.py', url,
                             '--work-dir', tmp_path / 'work', '--cfg-options',
                             f'test_dataloader.dataset.data_root={shapes_cls}')
        assert test_tool.returncode == 1
        assert test_tool.stderr.strip().splitlines()[-1].startswith('error: Refused to load')
    assert not marker.exists() and not (tmp_path / 'out.pth').exists()


@pytest.mark.slow  # a tool subprocess
def test_tools_test_reads_a_save_pretrained_folder_as_load_from_does(hub, tmp_path, shapes_cls):
    """The same checkpoint reading everywhere: ``tools/test.py`` takes the folder as
    ``load_from`` and ``init_cfg`` do, and the converted classifier is tested."""
    config = tmp_path / 'portable_cls.py'
    config.write_text(
        f"_base_ = '{ROOT / 'configs' / 'demo' / 'cvt-tiny_shapes-cls.py'}'\n"
        f"model = dict(backbone=dict(arch={PORTABLE!r}, kv_strides=[2, 2, 2]),\n"
        f"             head=dict(num_classes={CLASSES}, in_channels=48, topk=(1,)))\n"
        f"data_preprocessor = dict(num_classes={CLASSES})\n"
        f"test_dataloader = dict(dataset=dict(data_root='{shapes_cls}'))\n"
        f"test_evaluator = dict(type='Accuracy', topk=(1,))\n")
    result = run_tool('test.py', config, hub / 'bin', '--work-dir', tmp_path / 'work',
                      '--metrics-out', tmp_path / 'metrics.json')
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'accuracy/top1' in json.loads((tmp_path / 'metrics.json').read_text())
