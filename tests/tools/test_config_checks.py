"""Config mistakes are named before anything is built or trained.

CvT's own options fail when a whole model is built from a toolbox registry; a neck or head
that expects other channels than the backbone gives is caught by ``check_model_config``
(called by tools/train.py and tools/test.py), which names the field and the value to set.
"""
from pathlib import Path

import pytest
from mmengine.config import Config

from config_checks import check_data_paths, check_model_config, cvt_output_channels
from cvt_backbone import ConfigError, CvT
from tests.helpers import ROOT, TINY


def config_from(tmp_path: Path, text: str) -> Config:
    path = tmp_path / 'cfg.py'
    path.write_text(text)
    return Config.fromfile(str(path))


@pytest.fixture
def mask_rcnn(tmp_path) -> Config:
    """mmdet's Mask R-CNN with a tiny CvT, its FPN still expecting ResNet-50's channels."""
    return config_from(tmp_path, f"""
_base_ = 'mmdet::_base_/models/mask-rcnn_r50_fpn.py'
model = dict(backbone=dict(_delete_=True, type='CvT', arch={TINY!r}))
""")


@pytest.fixture
def upernet(tmp_path) -> Config:
    """mmseg's UperNet (4 Swin stages) with a tiny 3-stage CvT."""
    return config_from(tmp_path, f"""
_base_ = 'mmseg::_base_/models/upernet_swin.py'
model = dict(backbone=dict(_delete_=True, type='CvT', arch={TINY!r}))
""")


@pytest.mark.parametrize('backbone, match', [
    (dict(arch='cvt-99'), r"Unknown CvT arch 'cvt-99'; valid presets are \['cvt-13'"),
    (dict(arch=dict(TINY, depths=[1, 1])), r"arch field 'depths' needs one value per stage "
                                           r'\(3; embed_dims has 3 entries\)'),
    (dict(arch=TINY, out_indices=(0, 3)), r'out_indices entry 3 is out of range for a 3-stage'),
    (dict(arch=TINY, frozen_stages=4), r'frozen_stages must be in \[-1, 3\]'),
])
def test_bad_backbone_options_fail_when_the_detector_is_built(mask_rcnn, backbone, match):
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    register_all_modules()
    mask_rcnn.model.backbone = dict(type='CvT', **backbone)
    mask_rcnn.model.neck.in_channels = [16, 32, 48]
    with pytest.raises(ValueError, match=match):
        MODELS.build(mask_rcnn.model)
    with pytest.raises(ConfigError, match='model.backbone: ' + match):
        check_model_config(mask_rcnn)


def test_fpn_in_channels_must_match_the_backbone(mask_rcnn):
    with pytest.raises(ConfigError, match=r'model\.neck\.in_channels is \[256, 512, 1024, 2048\], '
                                          r'but the CvT backbone .* outputs 3 map\(s\) of '
                                          r'\[16, 32, 48\] channels: set model\.neck\.in_channels'
                                          r'=\[16, 32, 48\]'):
        check_model_config(mask_rcnn)
    mask_rcnn.model.neck.in_channels = [16, 32, 48]
    check_model_config(mask_rcnn)
    mask_rcnn.model.backbone.out_indices = (1, 2)
    with pytest.raises(ConfigError, match=r'set model\.neck\.in_channels=\[32, 48\]'):
        check_model_config(mask_rcnn)


def test_segmentation_heads_must_match_the_outputs_they_pick(upernet):
    with pytest.raises(ConfigError, match=r'model\.decode_head\.in_index \[0, 1, 2, 3\] is out '
                                          r'of range: .* \(valid: 0\.\.2\)'):
        check_model_config(upernet)
    upernet.model.decode_head.in_index = [0, 1, 2]
    with pytest.raises(ConfigError, match=r'model\.decode_head\.in_channels is \[96, 192, 384, '
                                          r'768\] for in_index \[0, 1, 2\], .*: set '
                                          r'model\.decode_head\.in_channels=\[16, 32, 48\]'):
        check_model_config(upernet)
    upernet.model.decode_head.in_channels = [16, 32, 48]
    with pytest.raises(ConfigError, match=r'model\.auxiliary_head\.in_channels is 384 for '
                                          r'in_index 2, .*: set model\.auxiliary_head\.'
                                          r'in_channels=48'):
        check_model_config(upernet)
    upernet.model.auxiliary_head.in_channels = 48
    check_model_config(upernet)


def test_classifier_head_must_match_the_class_token():
    cfg = Config.fromfile(str(ROOT / 'configs' / 'demo' / 'cvt-tiny_shapes-cls.py'))
    check_model_config(cfg)
    width = cfg.model.head.in_channels
    cfg.model.head.in_channels = width // 2
    with pytest.raises(ConfigError, match=rf'model\.head\.in_channels is {width // 2}, .* set '
                                          rf'model\.head\.in_channels={width}$'):
        check_model_config(cfg)


def test_every_shipped_config_passes():
    configs = [p for p in (ROOT / 'configs').rglob('*.py')
               if '_base_' not in p.parts and 'deploy' not in p.parts]  # deploy: mmdeploy's
    assert configs
    for path in configs:
        check_model_config(Config.fromfile(str(path)))


def test_output_channels_follow_out_indices():
    assert cvt_output_channels(dict(type='CvT', arch='cvt-w24', out_indices=(1, -1))) == \
        [768, 1024]
    assert cvt_output_channels(dict(type='mmdet.CvT', arch=TINY, out_type='cls_token')) == [48]
    assert cvt_output_channels(dict(type=CvT, arch=TINY)) == [16, 32, 48]


def test_a_missing_imagenet_split_is_named_with_where_the_layouts_are(tmp_path):
    """mmpretrain's ImageNet reads a ``split`` folder under its root."""
    cfg = Config.fromfile(str(ROOT / 'configs' / 'cvt' / 'cvt-13_8xb256_in1k-224px.py'))
    (tmp_path / 'imagenet').mkdir()
    cfg.train_dataloader.dataset.dataset.data_root = str(tmp_path / 'imagenet')
    with pytest.raises(FileNotFoundError, match=r"^train_dataloader\.dataset\.dataset\.split: "
                                                r"'.*imagenet/train' does not exist\. Data "
                                                r'layouts for COCO, ADE20K and ImageNet: '
                                                r'docs/training\.md'):
        check_data_paths(cfg, ('train_dataloader', ))
