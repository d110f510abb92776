"""Mixed precision on the feature extractor: CPU training in bfloat16 (``--amp``), testing
with the backbone and neck under autocast, heads in float32."""
import json
import math

import pytest
import torch

from cvt_backbone import read_checkpoint
from cvt_backbone.training.amp import (
    CpuAmpOptimWrapper,
    autocast_features,
    feature_parts,
    inference_amp_dtype,
)
from tests.helpers import tiny_cls_config, train


@pytest.mark.slow  # tools/train.py in a subprocess
def test_cpu_training_with_amp_learns_in_bfloat16_with_float32_parameters(shapes_cls,
                                                                         tmp_path):
    config = tiny_cls_config(tmp_path / 'cfg.py', shapes_cls, max_epochs=6)
    result = train(config, tmp_path / 'work', '--amp')
    assert "'type': 'CpuAmpOptimWrapper'" in result.stdout.replace('"', "'") or \
        "type='CpuAmpOptimWrapper'" in result.stdout
    scalars = next((tmp_path / 'work').glob('*/vis_data/scalars.json'))
    losses = [json.loads(line)['loss'] for line in scalars.read_text().splitlines()
              if 'loss' in json.loads(line)]
    assert len(losses) == 12 and all(math.isfinite(v) for v in losses)
    assert sum(losses[-3:]) < 0.8 * sum(losses[:3]), losses
    state = read_checkpoint(tmp_path / 'work' / 'epoch_6.pth')['state_dict']
    floats = {v.dtype for k, v in state.items() if v.is_floating_point()}
    assert floats == {torch.float32}


@pytest.mark.slow  # tools/test.py in a subprocess
def test_the_test_tool_runs_the_features_in_bfloat16_with_amp(trained_cls, tmp_path):
    from tests.helpers import run_tool

    metrics = {}
    for amp in ([], ['--amp']):
        out = tmp_path / f'metrics{len(amp)}.json'
        result = run_tool('test.py', trained_cls['config'],
                          trained_cls['work_dir'] / 'epoch_1.pth', '--work-dir',
                          tmp_path / 'work', '--metrics-out', out, *amp)
        assert result.returncode == 0, result.stderr[-3000:]
        said = 'backbone and neck under bfloat16 autocast' in result.stdout + result.stderr
        assert said == bool(amp)
        metrics[bool(amp)] = json.loads(out.read_text())
    assert metrics[True].keys() == metrics[False].keys() and 'accuracy/top1' in metrics[True]


def test_cpu_wrapper_autocasts_the_backbone_and_neck_only():
    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone, self.neck = torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)
            self.head = torch.nn.Linear(4, 4)

        def forward(self, x):
            self.seen = [self.backbone(x), self.neck(self.backbone(x))]
            self.head_input_dtype = self.seen[1].dtype
            return self.head(self.seen[1])

    model = Model()
    wrapper = CpuAmpOptimWrapper(optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    x = torch.randn(2, 4)
    with wrapper.optim_context(model):
        out = model(x)
    # the backbone ran in bfloat16 and handed float32 on; the head ran in float32
    expected = torch.nn.functional.linear(x.bfloat16(), model.backbone.weight.bfloat16(),
                                          model.backbone.bias.bfloat16()).float()
    assert torch.equal(model.seen[0], expected)
    assert model.head_input_dtype == torch.float32 and out.dtype == torch.float32
    assert torch.allclose(out, model.head(model.seen[1]))
    assert set(model.state_dict()) == {f'{p}.{n}' for p in ('backbone', 'neck', 'head')
                                       for n in ('weight', 'bias')}
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    with pytest.raises(ValueError, match='bfloat16 or float16'):
        CpuAmpOptimWrapper(dtype='float64', optimizer=torch.optim.SGD(model.parameters(),
                                                                     lr=0.1))


def test_autocast_features_hooks_once_and_a_bare_backbone_whole():
    layer = torch.nn.Linear(4, 4)
    assert feature_parts(layer) == [layer]
    assert autocast_features(layer, 'cpu') == torch.bfloat16
    autocast_features(layer, 'cpu')
    assert len(layer._forward_pre_hooks) == len(layer._forward_hooks) == 1
    assert 'forward' not in vars(layer)  # hooks, not a replaced method
    x = torch.randn(3, 4)
    assert torch.equal(layer(x), torch.nn.functional.linear(
        x.bfloat16(), layer.weight.bfloat16(), layer.bias.bfloat16()).float())


def test_autocast_ends_with_the_part_even_when_it_raises():
    class Failing(torch.nn.Module):
        def forward(self, x):
            raise RuntimeError('broken')

    part = Failing()
    autocast_features(part, 'cpu')
    with pytest.raises(RuntimeError, match='broken'):
        part(torch.randn(2))
    assert not torch.is_autocast_cpu_enabled()


def test_inference_dtype_follows_the_device(monkeypatch):
    assert inference_amp_dtype('cpu') == torch.bfloat16
    monkeypatch.setattr(torch.cuda, 'is_bf16_supported', lambda: False)
    assert inference_amp_dtype('cuda') == torch.float16
    monkeypatch.setattr(torch.cuda, 'is_bf16_supported', lambda: True)
    assert inference_amp_dtype('cuda') == torch.bfloat16
