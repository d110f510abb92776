"""FLOP counting with the attention matmuls, and tools/analysis_tools/get_flops.py."""
import runpy
import sys

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from cvt_backbone import CvT
from flops import count_flops, tensor_forward
from tests.helpers import ROOT

GET_FLOPS = ROOT / 'tools' / 'analysis_tools' / 'get_flops.py'
TINY = dict(embed_dims=[16, 32, 48], depths=[1, 1, 1], num_heads=[1, 2, 3])


class Attend(nn.Module):

    def __init__(self, op=F.scaled_dot_product_attention) -> None:
        super().__init__()
        self.op = op

    def forward(self, q, k, v):
        out = self.op(q, k, v)
        return out[0] if isinstance(out, tuple) else out


def test_attention_counts_both_matmuls():
    q, k, v = torch.randn(2, 3, 10, 8), torch.randn(2, 3, 7, 8), torch.randn(2, 3, 7, 5)
    count = count_flops(Attend(), (q, k, v))
    assert count.attention_macs == count.macs == 2 * 3 * 10 * 7 * (8 + 5)


def test_fused_cpu_attention_kernel_is_counted():
    # torch 2.1 runs the CPU kernel under the CUDA kernel's name
    fused = getattr(torch.ops.aten, '_scaled_dot_product_flash_attention_for_cpu',
                    torch.ops.aten._scaled_dot_product_flash_attention)
    q, k, v = torch.randn(1, 2, 6, 4), torch.randn(1, 2, 5, 4), torch.randn(1, 2, 5, 4)
    assert count_flops(Attend(fused), (q, k, v)).attention_macs == 2 * 6 * 5 * (4 + 4)


def test_cvt13_at_224_is_9_1_gflop_with_attention():
    count = count_flops(CvT(arch='cvt-13').eval(), torch.randn(1, 3, 224, 224))
    assert count.flops == pytest.approx(9.1e9, rel=0.02)
    assert count.flops == 2 * count.macs
    # q @ k^T and attn @ v: N queries x M keys x C channels each, per stage and block
    stages = [(56 * 56, 28 * 28, 64, 1), (28 * 28, 14 * 14, 192, 2),
              (14 * 14 + 1, 7 * 7 + 1, 384, 10)]
    assert count.attention_macs == sum(2 * n * m * c * depth for n, m, c, depth in stages)
    assert count.params == pytest.approx(19.61e6, rel=1e-3)


def test_get_flops_reports_both_conventions(monkeypatch, capsys):
    monkeypatch.setattr(sys, 'argv', ['get_flops.py', 'cvt-13', '--shape', '64', '96'])
    runpy.run_path(str(GET_FLOPS), run_name='__main__')
    out = capsys.readouterr().out
    assert 'Parameters: 19.61 M' in out
    assert 'GFLOPs = 2 x MACs' in out and 'MACs:' in out
    assert 'attention matmuls' in out


def test_detector_config_counts_backbone_neck_and_heads(tmp_path):
    config = tmp_path / 'mask_rcnn_cvt.py'
    config.write_text(
        "_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'\n"
        "custom_imports = dict(imports=['cvt_backbone'], allow_failed_imports=False)\n"
        f"model = dict(backbone=dict(_delete_=True, type='CvT', arch={TINY!r}),\n"
        "             neck=dict(in_channels=[16, 32, 48], num_outs=5),\n"
        "             test_cfg=dict(rpn=dict(nms_pre=100, max_per_img=10)))\n")
    model, inputs, scope = tensor_forward(str(config), (64, 96))
    assert scope == 'mmdet' and inputs.shape == (1, 3, 64, 96)
    count = count_flops(model, inputs)
    backbone = count_flops(model.model.backbone, inputs)
    assert backbone.attention_macs > 0
    assert count.attention_macs == backbone.attention_macs
    assert count.macs > 10 * backbone.macs  # FPN, RPN and the RoI heads are counted


def test_config_without_toolbox_scope_is_refused(tmp_path):
    config = tmp_path / 'bare.py'
    config.write_text("model = dict(type='CvT')\n")
    with pytest.raises(ValueError, match='default_scope'):
        tensor_forward(str(config))


def test_a_config_is_measured_at_its_own_test_size(monkeypatch, capsys):
    """The demo detector resizes its test images to 128x128: it is measured there, not at
    mmdet's usual 800x1344."""
    config = ROOT / 'configs' / 'demo' / 'mask-rcnn_cvt-tiny_fpn_shapes.py'
    monkeypatch.setattr(sys, 'argv', ['get_flops.py', str(config)])
    runpy.run_path(str(GET_FLOPS), run_name='__main__')
    out = capsys.readouterr().out
    assert 'Input shape: (1, 3, 128, 128)' in out
    assert f'{config} (mmdet model, backbone + neck + heads)' in out
