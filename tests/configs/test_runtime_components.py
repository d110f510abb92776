"""The project's configs are stock OpenMMLab configs: MMEngine's own Runner, and cvt-backbone's
training components named in them (configs/_base_/cvt_runtime.py), so that whatever builds
their Runner (tools/train.py, the toolboxes' own tools/train.py) gets them."""
from pathlib import Path

import pytest
from mmengine.config import Config
from mmengine.hooks import CheckpointHook
from mmengine.runner import Runner

from cvt_backbone.training import (
    RandomStateHook,
    SafeCheckpointHook,
    SafeLoadingHook,
    SeededDataset,
    SeededDefaultSampler,
)
from tests.helpers import DEMO_CLS_CONFIG, ROOT

#: The configs that train: every one but the examples (CvT in a toolbox's own recipe).
RECIPES = sorted(p for p in (ROOT / 'configs').rglob('*.py')
                 if p.parent.name not in ('_base_', 'deploy', 'examples'))


def test_mmengines_own_runner_builds_the_components_a_config_names(tmp_path, shapes_cls):
    cfg = Config.fromfile(str(DEMO_CLS_CONFIG))
    cfg.work_dir = str(tmp_path / 'work')
    cfg.train_dataloader.dataset.dataset.data_root = str(shapes_cls)
    for loader in ('val_dataloader', 'test_dataloader'):
        cfg[loader].dataset.data_root = str(shapes_cls)
    runner = Runner.from_cfg(cfg)  # what the toolboxes' tools/train.py do
    assert type(runner) is Runner
    checkpoint_hooks = [h for h in runner.hooks if isinstance(h, CheckpointHook)]
    assert [type(h) for h in checkpoint_hooks] == [SafeCheckpointHook]
    kinds = [type(h) for h in runner.hooks]
    assert kinds.count(RandomStateHook) == 1 and kinds.count(SafeLoadingHook) == 1
    assert isinstance(runner.train_dataloader.sampler, SeededDefaultSampler)
    assert isinstance(runner.train_dataloader.dataset, SeededDataset)


@pytest.mark.parametrize('path', RECIPES, ids=lambda p: str(p.relative_to(ROOT / 'configs')))
def test_every_recipe_names_its_components_and_no_runner(path: Path):
    cfg = Config.fromfile(str(path))
    assert 'runner_type' not in cfg
    assert cfg.custom_imports.imports == ['cvt_backbone', 'cvt_backbone.training']
    assert [h['type'] for h in cfg.custom_hooks] == ['SafeLoadingHook', 'RandomStateHook']
    assert cfg.default_hooks.checkpoint.type == 'SafeCheckpointHook'
    loader = cfg.train_dataloader
    assert loader.sampler.type in ('SeededDefaultSampler', 'SeededInfiniteSampler')
    assert loader.dataset.type == 'SeededDataset'

