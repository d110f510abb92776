"""The configs' ``runner_type='CvTRunner'`` gives any script that builds their Runner (the
toolboxes' own ``tools/train.py`` among them) the checkpoint hook and seeded training data
that ``tools/train.py`` has."""
from mmengine.config import Config
from mmengine.hooks import CheckpointHook
from mmengine.registry import RUNNERS

from cvt_backbone.engine import (CvTRunner, RandomStateHook, SafeCheckpointHook,
                                 SeededDataset, SeededDefaultSampler)
from tests.helpers import DEMO_CLS_CONFIG


def test_a_toolbox_train_script_gets_the_protections(tmp_path, shapes_cls):
    cfg = Config.fromfile(str(DEMO_CLS_CONFIG))
    cfg.work_dir = str(tmp_path / 'work')
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].dataset.data_root = str(shapes_cls)
    original = cfg.to_dict()
    runner = RUNNERS.build(cfg)  # what the toolboxes' tools/train.py do with a runner_type
    assert type(runner) is CvTRunner
    checkpoint_hooks = [h for h in runner.hooks if isinstance(h, CheckpointHook)]
    assert [type(h) for h in checkpoint_hooks] == [SafeCheckpointHook]
    assert [type(h) for h in runner.hooks].count(RandomStateHook) == 1
    assert isinstance(runner.train_dataloader.sampler, SeededDefaultSampler)
    assert isinstance(runner.train_dataloader.dataset, SeededDataset)
    assert cfg.to_dict() == original  # the caller's config is left as it was
    assert (tmp_path / 'work' / DEMO_CLS_CONFIG.name).is_file()
