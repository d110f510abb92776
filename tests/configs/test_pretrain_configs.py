"""The ImageNet pretraining configs (configs/cvt/): the official recipe, and one training step."""
from __future__ import annotations

import copy
import functools
import re

import numpy as np
import pytest
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample
from torch.nn.modules.batchnorm import _BatchNorm

from cvt_backbone import CvT  # importing the package registers CvT
from tests.helpers import ROOT, published_weights

CONFIG_DIR = ROOT / 'configs' / 'cvt'

# name: (arch, num_classes, weight decay, epochs, train/test size); the per-GPU batch comes
# from the name (8xbN), the learning rate from 2.5e-4 per 256 images.
RECIPES = {
    'cvt-13_8xb256_in1k-224px': ('cvt-13', 1000, 0.05, 300, 224),
    'cvt-21_8xb256_in1k-224px': ('cvt-21', 1000, 0.1, 300, 224),
    'cvt-13_8xb128_in1k-384px': ('cvt-13', 1000, 0.05, 300, 384),
    'cvt-21_8xb128_in1k-384px': ('cvt-21', 1000, 0.1, 300, 384),
    'cvt-13_8xb256_in21k-224px': ('cvt-13', 21841, 0.05, 90, 224),
    'cvt-21_8xb256_in21k-224px': ('cvt-21', 21841, 0.1, 90, 224),
    'cvt-w24_8xb256_in21k-224px': ('cvt-w24', 21841, 0.1, 90, 224),
    'cvt-w24_8xb128_in1k-384px': ('cvt-w24', 1000, 0.1, 300, 384),
}
# W24 has 277M parameters: building it and one CPU step take about 10 s each on a busy 2-core
# machine, so the 21k-class W24 config steps with the W24 widths at depth 1 (the 1k one in full).
W24_SHALLOW = dict(embed_dims=[192, 768, 1024], depths=[1, 1, 1], num_heads=[3, 12, 16])


@pytest.fixture(autouse=True, scope='module')
def one_thread():
    """Run these small CPU steps on one thread: on a busy 2-core machine two threads made
    them several times slower (measured), and the work is too small to gain from a second."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@functools.lru_cache(maxsize=None)
def load_config(name: str) -> Config:
    """Load ``configs/cvt/<name>.py`` once per test session."""
    return Config.fromfile(str(CONFIG_DIR / f'{name}.py'))


def build_classifier(cfg: Config, **backbone: object) -> nn.Module:
    """Build the config's model as the Runner does (the config's data_preprocessor merged in).

    Args:
        cfg: A classification config.
        **backbone: Overrides of the backbone config.

    Returns:
        The ``ImageClassifier``, not initialised.
    """
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.setdefault('data_preprocessor', cfg.data_preprocessor)
    model_cfg.backbone.update(backbone)
    return MODELS.build(model_cfg)


def synthetic_batch(num_classes: int, batch_size: int = 2, size: int = 64) -> dict:
    """Random uint8 images with labels, as a dataloader hands them to ``train_step``."""
    gen = torch.Generator().manual_seed(0)
    inputs = [torch.randint(0, 256, (3, size, size), dtype=torch.uint8, generator=gen)
              for _ in range(batch_size)]
    samples = [DataSample().set_gt_label(i * 7 % num_classes) for i in range(batch_size)]
    return dict(inputs=inputs, data_samples=samples)


def by_type(pipeline: list, type_name: str) -> dict | None:
    """The first transform of ``pipeline`` of type ``type_name``, or None."""
    return next((t for t in pipeline if t['type'] == type_name), None)


def test_the_config_folder_holds_exactly_these_configs():
    assert sorted(p.stem for p in CONFIG_DIR.glob('*.py')) == sorted(RECIPES)


@pytest.mark.parametrize('name', sorted(RECIPES))
def test_official_recipe(name):
    cfg = load_config(name)
    arch, num_classes, weight_decay, epochs, size = RECIPES[name]
    batch = int(re.search(r'_8xb(\d+)_', name)[1])
    assert cfg.custom_imports == dict(imports=['cvt_backbone', 'cvt_backbone.training'],
                                      allow_failed_imports=False)
    assert 'runner_type' not in cfg

    model = cfg.model
    assert model.type == 'ImageClassifier'
    assert model.backbone.type == 'CvT' and model.backbone.arch == arch
    assert model.backbone.out_type == 'cls_token'
    assert model.get('neck') is None
    assert model.head.type == 'LinearClsHead' and model.head.num_classes == num_classes
    assert model.head.in_channels == CvT.arch_settings[arch]['embed_dims'][-1]
    assert model.head.loss == dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original')
    assert model.head.init_cfg == dict(type='TruncNormal', layer='Linear', std=0.02)
    assert model.train_cfg.augments == [dict(type='Mixup', alpha=0.8),
                                        dict(type='CutMix', alpha=1.0)]
    assert cfg.data_preprocessor.num_classes == num_classes
    if arch == 'cvt-w24':  # the official drop path 0.3, the preset's default
        assert 'drop_path_rate' not in model.backbone
        assert CvT(arch='cvt-w24').stages[2].blocks[-1].drop_path.drop_prob == pytest.approx(0.3)

    optimizer = cfg.optim_wrapper.optimizer
    assert optimizer.type == 'AdamW' and optimizer.weight_decay == weight_decay
    assert (optimizer.betas, optimizer.eps) == ((0.9, 0.999), 1e-8)
    assert cfg.train_dataloader.batch_size == batch
    assert cfg.auto_scale_lr == dict(base_batch_size=8 * batch, enable=True)
    assert optimizer.lr == pytest.approx(2.5e-4 / 256 * 8 * batch)
    assert cfg.optim_wrapper.paramwise_cfg == dict(
        norm_decay_mult=0.0, bias_decay_mult=0.0, custom_keys={'.cls_token': dict(decay_mult=0.0)})
    assert cfg.optim_wrapper.get('clip_grad') is None
    assert cfg.optim_wrapper.get('type', 'OptimWrapper') == 'OptimWrapper'

    warmup, cosine = cfg.param_scheduler
    assert warmup.type == 'LinearLR' and warmup.end == 5 and warmup.convert_to_iter_based
    assert cosine.type == 'CosineAnnealingLR' and cosine.begin == 5 and cosine.eta_min == 1e-5
    assert cfg.train_cfg.max_epochs == epochs

    train = cfg.train_dataloader.dataset.dataset.pipeline
    assert by_type(train, 'RandomResizedCrop')['scale'] == size
    assert {**by_type(train, 'RandAugment'), 'hparams': None} == dict(
        type='RandAugment', policies='timm_increasing', num_policies=2, total_level=10,
        magnitude_level=9, magnitude_std=0.5, hparams=None)
    erasing = by_type(train, 'RandomErasing')
    assert (erasing.erase_prob, erasing.mode) == (0.25, 'rand') and erasing.fill_std
    for transform in train:
        assert transform.get('interpolation', 'bicubic') == 'bicubic'
        assert transform.get('hparams', {}).get('interpolation', 'bicubic') == 'bicubic'

    if 'in21k' in name:
        assert cfg.train_dataloader.dataset.dataset.type == 'ImageNet21k'
        assert cfg.train_dataloader.dataset.dataset.data_root == 'data/imagenet21k'
        assert cfg.val_dataloader is None and cfg.test_dataloader is None
        return
    assert cfg.train_dataloader.dataset.dataset.type == 'ImageNet'
    for loader in (cfg.val_dataloader, cfg.test_dataloader):
        test = [t for t in loader.dataset.pipeline if t['type'] not in (
            'LoadImageFromFile', 'PackInputs')]
        if size == 224:
            assert test == [dict(type='ResizeEdge', scale=256, edge='short', backend='pillow',
                                 interpolation='bicubic'),
                            dict(type='CenterCrop', crop_size=224)]
        else:
            assert test == [dict(type='Resize', scale=384, backend='pillow',
                                 interpolation='bicubic')]


def test_warmup_starts_at_1e6():
    cfg = load_config('cvt-13_8xb256_in1k-224px')
    warmup = cfg.param_scheduler[0]
    assert warmup.start_factor * cfg.optim_wrapper.optimizer.lr == pytest.approx(1e-6)


def test_384_training_pipeline_is_the_224_one_with_a_384_crop():
    p224 = copy.deepcopy(load_config('cvt-13_8xb256_in1k-224px').train_dataloader.dataset.dataset
                         .pipeline)
    p384 = load_config('cvt-13_8xb128_in1k-384px').train_dataloader.dataset.dataset.pipeline
    by_type(p224, 'RandomResizedCrop')['scale'] = 384
    assert p384 == p224


@pytest.mark.parametrize('name, repo', [
    ('cvt-13_8xb128_in1k-384px', 'microsoft/cvt-13'),
    ('cvt-21_8xb128_in1k-384px', 'microsoft/cvt-21'),
    ('cvt-w24_8xb128_in1k-384px', 'microsoft/cvt-w24-384-22k'),
])
def test_384_configs_start_from_published_weights(name, repo):
    cfg = load_config(name)
    published = next(p for p in published_weights() if p['repo'] == repo)
    assert cfg.load_from == published['url'] and cfg.model.backbone.arch == published['arch']


def no_decay_officially(name: str, module: nn.Module) -> bool:
    """The official ``set_wd`` rule (WITHOUT_WD_LIST ['bn', 'bias', 'ln'] and the class token)."""
    return (isinstance(module, (nn.LayerNorm, _BatchNorm)) or name.endswith('.bias')
            or 'cls_token' in name)


@pytest.mark.parametrize('name', ['cvt-13_8xb256_in1k-224px', 'cvt-21_8xb128_in1k-384px'])
def test_weight_decay_groups_follow_the_official_rule(name):
    cfg = load_config(name)
    model = build_classifier(cfg)
    optim_wrapper = build_optim_wrapper(model, copy.deepcopy(cfg.optim_wrapper))
    decay_of = {id(p): group['weight_decay'] for group in optim_wrapper.param_groups
                for p in group['params']}
    base = cfg.optim_wrapper.optimizer.weight_decay
    modules = dict(model.named_modules())
    checked = {'norm': 0, 'bias': 0, 'cls_token': 0, 'dwconv': 0, 'decayed': 0}
    for param_name, param in model.named_parameters():
        module = modules[param_name.rpartition('.')[0]]
        expected = 0.0 if no_decay_officially(param_name, module) else base
        assert decay_of[id(param)] == expected, param_name
        if isinstance(module, (nn.LayerNorm, _BatchNorm)):
            checked['norm'] += 1
        elif param_name.endswith('.bias'):
            checked['bias'] += 1
        elif 'cls_token' in param_name:
            checked['cls_token'] += 1
        elif isinstance(module, nn.Conv2d) and module.groups == module.in_channels > 1:
            checked['dwconv'] += 1
        else:
            checked['decayed'] += 1
    depth = sum(CvT.arch_settings[cfg.model.backbone.arch]['depths'])
    assert checked['dwconv'] == 3 * depth  # q, k, v per block: decayed
    assert checked['cls_token'] == 1 and checked['norm'] and checked['bias']
    # each parameter in one group (OptimWrapper adds a parameter-less group of base settings)
    in_groups = [id(p) for group in optim_wrapper.param_groups for p in group['params']]
    assert all(in_groups.count(id(p)) == 1 for p in model.parameters())


def test_head_and_backbone_initialisation():
    model = build_classifier(load_config('cvt-13_8xb256_in1k-224px'))
    model.init_weights()
    fc = model.head.fc
    assert torch.count_nonzero(fc.bias) == 0
    assert fc.weight.std().item() == pytest.approx(0.02, rel=0.03)
    assert fc.weight.abs().max().item() < 0.2
    assert model.backbone.stages[2].cls_token.std().item() == pytest.approx(0.02, rel=0.3)


@pytest.mark.parametrize('name', sorted(RECIPES))
def test_one_training_step_on_cpu(name):
    cfg = load_config(name)
    num_classes = RECIPES[name][1]
    if name == 'cvt-w24_8xb256_in21k-224px':
        model = build_classifier(cfg, arch=W24_SHALLOW)
    else:
        model = build_classifier(cfg, init_cfg=None)
    if name == 'cvt-w24_8xb128_in1k-384px':
        # the full W24 (initialising its 277M parameters would take as long as the step)
        assert sum(p.numel() for p in model.parameters()) == pytest.approx(277.20e6, abs=1e4)
    else:
        model.init_weights()
    optim_wrapper = build_optim_wrapper(model, copy.deepcopy(cfg.optim_wrapper))
    torch.manual_seed(0)
    np.random.seed(0)
    before = model.head.fc.weight.detach().clone()
    model.train()
    log_vars = model.train_step(synthetic_batch(num_classes), optim_wrapper)
    assert torch.isfinite(log_vars['loss'])
    # the label-smoothed loss on a mixed batch is about ln(num_classes) at initialisation
    assert abs(log_vars['loss'].item() - np.log(num_classes)) < 1.0
    assert not torch.equal(model.head.fc.weight, before)


def test_the_readme_example_in_mmpretrains_resnet_recipe_takes_a_step():
    cfg = Config.fromfile(str(ROOT / 'configs' / 'examples' / 'resnet50-recipe_cvt-13_in1k.py'))
    model = build_classifier(cfg)
    model.init_weights()
    optim_wrapper = build_optim_wrapper(model, copy.deepcopy(cfg.optim_wrapper))
    torch.manual_seed(0)
    model.train()
    log_vars = model.train_step(synthetic_batch(1000), optim_wrapper)
    assert torch.isfinite(log_vars['loss'])
    model.eval()
    with torch.no_grad():
        assert model(synthetic_batch(1000)['inputs'][0][None].float(), mode='tensor').shape \
            == (1, 1000)
