"""Whole-model deployment through mmdeploy (tools/deployment/mmdeploy_export.py).

The demo Mask R-CNN and UperNet, with weights made here, are exported by mmdeploy and
checked in onnxruntime at three sizes by the tool itself; CvT's two rewrites are compared
with PyTorch's own functions; a missing mmdeploy and bad arguments are one error line.
"""
from __future__ import annotations

import importlib.util
import re
import sys

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config

from mmdeploy_check import (
    MMDEPLOY_PACKAGES,
    ExportError,
    match_detections,
    require_mmdeploy,
)
from tests.helpers import ROOT, run_tool

needs_mmdeploy = pytest.mark.skipif(
    any(importlib.util.find_spec(name) is None for name in MMDEPLOY_PACKAGES),
    reason='mmdeploy and the [deploy,mmdeploy] extras are not installed')

DET_CONFIG = ROOT / 'configs' / 'demo' / 'mask-rcnn_cvt-tiny_fpn_shapes.py'
SEG_CONFIG = ROOT / 'configs' / 'demo' / 'upernet_cvt-tiny_shapes.py'
CHECK_LINE = re.compile(r'^  (export size|non-square|odd height) \((\d+)x(\d+).*: onnxruntime '
                        r'vs mmdeploy PyTorch: (.*) ok; deployed vs plain: (.*)$')


def made_weights(config, path, detector: bool):
    """Random weights for a config, saved as a training checkpoint. The detector's box
    regressions are zero (its boxes are then its anchors, inside the image, as a trained
    model's are) and its class scores spread apart without saturating (near 1, thousands of
    candidates would tie within float32's resolution, and onnxruntime and PyTorch keep
    different ones of them)."""
    cfg = Config.fromfile(str(config))
    cfg.model.backbone.init_cfg = None
    if detector:
        from mmdet.registry import MODELS
        from mmdet.utils import register_all_modules
    else:
        from mmseg.registry import MODELS
        from mmseg.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    if detector:
        with torch.no_grad():
            for layer in (model.rpn_head.rpn_reg, model.roi_head.bbox_head.fc_reg):
                layer.weight.zero_()
                layer.bias.zero_()
            model.roi_head.bbox_head.fc_cls.weight.normal_(0, 0.05)
    torch.save({'state_dict': model.state_dict()}, path)
    return path


@needs_mmdeploy
@pytest.mark.slow  # the tool in a subprocess: export and checks, about 20 s each
@pytest.mark.parametrize('config, detector', [(DET_CONFIG, True), (SEG_CONFIG, False)],
                         ids=['mask_rcnn', 'upernet'])
def test_the_demo_models_export_and_pass_the_checks_at_three_sizes(tmp_path, config,
                                                                   detector):
    checkpoint = made_weights(config, tmp_path / 'weights.pth', detector)
    result = run_tool('deployment/mmdeploy_export.py', config, checkpoint, tmp_path / 'out',
                      timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / 'out' / 'end2end.onnx').stat().st_size > 0
    # the exporters' own warnings: counted in one line, not shown (--verbose shows them)
    hidden = re.findall(r'^\((\d+) warnings of the exporters hidden: (.+); --verbose shows '
                        r'them\)$', result.stdout, re.M)
    assert hidden and all(int(count) > 0 for count, _ in hidden), result.stdout
    assert 'TracerWarning' in hidden[0][1] and 'TracerWarning' not in result.stderr
    checks = [CHECK_LINE.match(line) for line in result.stdout.splitlines()]
    checks = [m for m in checks if m]
    assert [m[1] for m in checks] == ['export size', 'non-square', 'odd height']
    sizes = {(int(m[2]), int(m[3])) for m in checks}
    assert len(sizes) == 3 and any(h != w for h, w in sizes)
    for m in checks:
        if detector:
            assert re.match(r'[1-9]\d* detections', m[4]), m[0]
            assert re.match(r'[1-9]\d* of [1-9]\d* detections matched', m[5]), m[0]
        else:
            share = float(re.match(r'([\d.]+)% of pixels equal', m[4])[1])
            assert share >= 99.9, m[0]
            # what the rewrites are for: the deployed model computes what mmseg does
            assert float(re.match(r'([\d.]+)% of pixels equal', m[5])[1]) >= 99.5, m[0]
    if detector:  # without padding, mmdeploy's head rewrites agree with mmdet's
        matched, total, iou = re.match(r'(\d+) of (\d+) detections matched.*mask IoU mean '
                                       r'([\d.]+)', checks[0][5]).groups()
        assert matched == total and float(iou) >= 0.99, checks[0][0]


@needs_mmdeploy
def test_the_attention_rewrite_is_pytorchs_attention():
    from cvt_backbone.deploy.mmdeploy_rewrites import scaled_dot_product_attention__onnx
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 3, 7, 8), torch.randn(2, 3, 5, 8), torch.randn(2, 3, 5, 4)
    mask = torch.rand(7, 5) > 0.3
    mask[:, 0] = True
    for kwargs in (dict(scale=64 ** -0.5), dict(), dict(attn_mask=mask),
                   dict(attn_mask=torch.randn(7, 5), scale=0.3)):
        expected = F.scaled_dot_product_attention(q, k, v, **kwargs)
        torch.testing.assert_close(scaled_dot_product_attention__onnx(q, k, v, **kwargs),
                                   expected, rtol=1e-5, atol=1e-6)
    q = torch.randn(2, 3, 5, 8)
    torch.testing.assert_close(scaled_dot_product_attention__onnx(q, k, v, is_causal=True),
                               F.scaled_dot_product_attention(q, k, v, is_causal=True),
                               rtol=1e-5, atol=1e-6)


@needs_mmdeploy
@pytest.mark.parametrize('size, bins', [((13, 17), (6, 6)), ((64, 48), (3, 2)),
                                        ((5, 9), (6, 3)), ((32, 32), 2)])
def test_the_pooling_rewrite_is_adaptive_pooling_at_any_size(size, bins):
    from cvt_backbone.deploy.mmdeploy_rewrites import adaptive_avg_pool2d__onnx
    x = torch.randn(2, 4, *size)
    torch.testing.assert_close(adaptive_avg_pool2d__onnx(x, bins),
                               F.adaptive_avg_pool2d(x, bins), rtol=1e-5, atol=1e-6)


def test_detections_are_matched_by_label_and_overlap():
    boxes = torch.tensor([[0., 0, 10, 10], [20, 20, 30, 30], [0, 0, 10, 10]])
    labels = torch.tensor([0, 1, 2])
    other = torch.tensor([[21., 20, 30, 30], [0, 0, 10, 11], [50, 50, 60, 60]])
    assert sorted(match_detections(boxes, labels, other, torch.tensor([1, 0, 2]))) == \
        [(0, 1), (1, 0)]
    assert match_detections(boxes, labels, other[:0], labels[:0]) == []


def test_without_mmdeploy_the_extra_and_the_command_are_named(monkeypatch):
    monkeypatch.setitem(sys.modules, 'mmdeploy', None)
    with pytest.raises(ExportError, match=r'mmdeploy is not installed: .*\[deploy,mmdeploy\] '
                                          r'extras .*pip install --no-deps mmdeploy==1\.3\.1'):
        require_mmdeploy()


@pytest.mark.slow  # tool subprocesses
@pytest.mark.parametrize('args, message', [
    (('configs/demo/cvt-tiny_shapes-cls.py', 'x.pth', 'out'),
     r"error: configs/demo/cvt-tiny_shapes-cls.py has default_scope 'mmpretrain': this tool "
     r"deploys mmdet and mmseg models \(tools/deployment/pytorch2onnx.py exports "
     r"classifiers\)"),
    ((str(DET_CONFIG.relative_to(ROOT)), 'missing.pth', 'out'),
     r"error: Checkpoint 'missing.pth' does not exist"),
])
def test_bad_arguments_are_one_error_line(args, message):
    result = run_tool('deployment/mmdeploy_export.py', *args, timeout=300)
    assert result.returncode == 1 and 'Traceback' not in result.stderr, result.stderr[-2000:]
    assert re.fullmatch(message, result.stderr.strip().splitlines()[-1])
