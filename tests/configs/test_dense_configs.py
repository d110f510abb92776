"""The Mask R-CNN (mmdet) and UperNet (mmseg) configs, and the README's examples of CvT in
each toolbox's own recipes (configs/examples/), build, take a training step and predict."""
import glob

import pytest
import torch
from mmengine.config import Config
from mmengine.model import revert_sync_batchnorm
from mmengine.registry import MODELS, DefaultScope

from config_checks import check_model_config
from tests.helpers import ROOT, published_weights

MASK_RCNN = sorted(glob.glob(str(ROOT / 'configs' / 'mask_rcnn' / '*.py')))
UPERNET = sorted(glob.glob(str(ROOT / 'configs' / 'upernet' / '*.py')))
EXAMPLES = sorted(glob.glob(str(ROOT / 'configs' / 'examples' / '*.py')))
DETECTION_EXAMPLES = [p for p in EXAMPLES if 'mask-rcnn' in p]
SEGMENTATION_EXAMPLES = [p for p in EXAMPLES if 'upernet' in p]


def build(path: str):
    cfg = Config.fromfile(path)
    cfg.model.backbone.init_cfg = None
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        model = MODELS.build(cfg.model)
    model.init_weights()
    return cfg, revert_sync_batchnorm(model)  # as MMEngine's Runner does without a process group


@pytest.mark.parametrize('path', MASK_RCNN + UPERNET + DETECTION_EXAMPLES + SEGMENTATION_EXAMPLES,
                         ids=lambda p: p.rsplit('/', 1)[1])
def test_dense_configs_start_from_the_published_weights_of_their_arch(path):
    backbone = Config.fromfile(path).model.backbone
    published = {p['url']: p for p in published_weights() if p['resolution'] == 224}
    assert published[backbone.init_cfg.checkpoint]['arch'] == backbone.arch


def test_all_dense_configs_are_covered():
    assert len(MASK_RCNN) == 4 and len(UPERNET) == 2
    assert len(EXAMPLES) == 3 and len(DETECTION_EXAMPLES) == len(SEGMENTATION_EXAMPLES) == 1


@pytest.mark.parametrize('path', EXAMPLES, ids=lambda p: p.rsplit('/', 1)[1])
def test_examples_pass_the_checks(path):
    check_model_config(Config.fromfile(path))


def test_the_checks_catch_a_snippet_pasted_into_another_toolbox(tmp_path):
    """The mmdet snippet's neck in mmseg's recipe (which has none), and mmseg's inherited
    ResNet weights next to CvT's own: both are named before anything is built."""
    from cvt_backbone import ConfigError
    cfg = Config.fromfile(SEGMENTATION_EXAMPLES[0])
    cfg.model.neck = dict(in_channels=[64, 192, 384])
    with pytest.raises(ConfigError, match='model.neck has no type'):
        check_model_config(cfg)
    cfg = Config.fromfile(SEGMENTATION_EXAMPLES[0])
    cfg.model.pretrained = 'open-mmlab://resnet50_v1c'
    with pytest.raises(ConfigError, match=r"model.pretrained is 'open-mmlab://resnet50_v1c'.*"
                                          r'set model.pretrained=None'):
        check_model_config(cfg)
    del cfg.model.decode_head['in_index']
    cfg.model.pretrained = None
    with pytest.raises(ConfigError, match=r'model.decode_head.in_channels is \[64, 192, 384\] '
                                          r'for in_index -1'):
        check_model_config(cfg)


@pytest.mark.parametrize('path', MASK_RCNN + DETECTION_EXAMPLES,
                         ids=lambda p: p.rsplit('/', 1)[1])
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


@pytest.mark.parametrize('path', UPERNET + SEGMENTATION_EXAMPLES,
                         ids=lambda p: p.rsplit('/', 1)[1])
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
