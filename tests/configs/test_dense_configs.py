"""The Mask R-CNN (mmdet) and UperNet (mmseg) configs build, take a training step, predict."""
import glob

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope

import cvt_backbone

MASK_RCNN = sorted(glob.glob('configs/mask_rcnn/*.py'))
UPERNET = sorted(glob.glob('configs/upernet/*.py'))


def build(path: str):
    cfg = Config.fromfile(path)
    cfg.model.backbone.init_cfg = None
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        model = cvt_backbone.REGISTRIES[cfg.default_scope].build(cfg.model)
    model.init_weights()
    return cfg, model


def test_all_dense_configs_are_covered():
    assert len(MASK_RCNN) == 4 and len(UPERNET) == 2


@pytest.mark.parametrize('path', MASK_RCNN)
def test_mask_rcnn_config_trains_and_predicts(path):
    from mmdet.testing import demo_mm_inputs
    torch.manual_seed(0)
    cfg, model = build(path)
    assert cfg.model.neck.in_channels == model.backbone.embed_dims
    assert model.neck.num_outs == len(cfg.model.rpn_head.anchor_generator.strides)
    packed = demo_mm_inputs(2, [[3, 96, 128], [3, 80, 112]], num_items=[2, 3], num_classes=80,
                            with_mask=True)
    data = model.data_preprocessor(packed, True)
    model.train()
    losses = model(**data, mode='loss')
    loss, _ = model.parse_losses(losses)
    assert torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in model.backbone.parameters() if p.requires_grad]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
    model.eval()
    with torch.no_grad():
        results = model(**model.data_preprocessor(packed, False), mode='predict')
    assert len(results) == 2
    assert results[0].pred_instances.masks.shape[1:] == (96, 128)


@pytest.mark.parametrize('path', UPERNET)
def test_upernet_config_trains_and_predicts(path):
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    torch.manual_seed(0)
    cfg, model = build(path)
    assert cfg.model.decode_head.in_channels == model.backbone.embed_dims
    assert cfg.model.auxiliary_head.in_channels == model.backbone.embed_dims[
        cfg.model.auxiliary_head.in_index]
    inputs, samples = [], []
    for _ in range(2):
        inputs.append(torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8))
        sample = SegDataSample(metainfo=dict(img_shape=(64, 64), ori_shape=(64, 64),
                                             pad_shape=(64, 64)))
        sample.gt_sem_seg = PixelData(data=torch.randint(0, 150, (1, 64, 64)))
        samples.append(sample)
    data = model.data_preprocessor(dict(inputs=inputs, data_samples=samples), True)
    model.train()
    loss, _ = model.parse_losses(model(**data, mode='loss'))
    assert torch.isfinite(loss)
    loss.backward()
    model.eval()
    with torch.no_grad():
        results = model(**model.data_preprocessor(dict(inputs=inputs, data_samples=samples),
                                                  False), mode='predict')
    assert results[0].pred_sem_seg.data.shape == (1, 64, 64)
