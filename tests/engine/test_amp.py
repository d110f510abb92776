"""``--amp``: mixed precision on the CPU (bfloat16 autocast) and the right wrapper per device."""
import json
import math

import pytest
import torch
from mmengine.config import Config

from cvt_backbone import read_checkpoint
from cvt_backbone.engine import prepare_config
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


def amp_wrapper(monkeypatch, cuda: bool, bf16: bool = False) -> dict:
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: cuda)
    monkeypatch.setattr(torch.cuda, 'is_bf16_supported', lambda: bf16)
    cfg = Config(dict(optim_wrapper=dict(optimizer=dict(type='AdamW', lr=1e-3))))
    return prepare_config(cfg, 'x.py', amp=True).optim_wrapper


def test_amp_picks_the_wrapper_and_dtype_of_the_device(monkeypatch):
    assert amp_wrapper(monkeypatch, cuda=False) == dict(
        type='CpuAmpOptimWrapper', dtype='bfloat16', optimizer=dict(type='AdamW', lr=1e-3))
    assert amp_wrapper(monkeypatch, cuda=True, bf16=True)['dtype'] == 'bfloat16'
    fp16 = amp_wrapper(monkeypatch, cuda=True, bf16=False)
    assert fp16['type'] == 'AmpOptimWrapper' and fp16['dtype'] == 'float16'
    assert fp16['loss_scale'] == 'dynamic'


def test_cpu_wrapper_autocasts_the_forward():
    from cvt_backbone.engine.optim import CpuAmpOptimWrapper
    layer = torch.nn.Linear(4, 4)
    wrapper = CpuAmpOptimWrapper(optimizer=torch.optim.SGD(layer.parameters(), lr=0.1))
    with wrapper.optim_context(layer):
        out = layer(torch.randn(2, 4))
    assert out.dtype == torch.bfloat16 and layer.weight.dtype == torch.float32
    with pytest.raises(ValueError, match='bfloat16 or float16'):
        CpuAmpOptimWrapper(dtype='float64', optimizer=torch.optim.SGD(layer.parameters(),
                                                                     lr=0.1))
