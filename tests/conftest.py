"""Shared test set-up."""
from pathlib import Path

import pytest
from mmengine.registry import DefaultScope


@pytest.fixture(autouse=True)
def _isolate_default_scope():
    """Undo any default registry scope a test sets (``init_default_scope``,
    ``register_all_modules``), so that no test builds from another test's toolbox."""
    before = dict(DefaultScope._instance_dict)
    yield
    DefaultScope._instance_dict.clear()
    DefaultScope._instance_dict.update(before)


@pytest.fixture
def safe_loading():
    """MMEngine's checkpoint schemes with the package's loaders (what a config naming
    ``SafeLoadingHook`` and the tools get), put back as they were afterwards."""
    from mmengine.runner import CheckpointLoader

    from cvt_backbone.training import use_safe_loading
    schemes = dict(CheckpointLoader._schemes)
    use_safe_loading()
    yield
    CheckpointLoader._schemes.clear()
    CheckpointLoader._schemes.update(schemes)


@pytest.fixture(scope='session')
def shapes_cls(tmp_path_factory) -> Path:
    """16 + 4 generated 32x32 classification images (the demo's generator)."""
    from demo_shapes import make_classification_set
    root = tmp_path_factory.mktemp('data') / 'shapes_cls'
    make_classification_set(str(root), num_train=16, num_val=4, size=32)
    return root


@pytest.fixture(scope='session')
def trained_cls(shapes_cls, tmp_path_factory) -> dict:
    """The demo classifier through the tools once, for every test that reads a run.

    ``tools/train.py`` on a 2-epoch config shortened to 1 epoch with ``--cfg-options`` (2
    iterations, each logged; ``epoch_1.pth``), then ``tools/test.py`` with ``--show-dir vis``
    and ``--metrics-out``.

    Returns:
        ``tmp`` (the folder), ``work_dir``, ``config``, ``data``, and the two
        ``CompletedProcess`` results ``trained`` and ``tested``.
    """
    from tests.helpers import run_tool, tiny_cls_config, train

    tmp = tmp_path_factory.mktemp('trained_cls')
    config = tiny_cls_config(tmp / 'cfg.py', shapes_cls, max_epochs=2)
    work_dir = tmp / 'work'
    trained = train(config, work_dir, '--cfg-options', 'train_cfg.max_epochs=1')
    tested = run_tool('test.py', config, work_dir / 'epoch_1.pth', '--work-dir', work_dir,
                      '--show-dir', 'vis', '--metrics-out', tmp / 'metrics.json')
    assert tested.returncode == 0, tested.stderr[-3000:]
    return dict(tmp=tmp, work_dir=work_dir, config=config, data=shapes_cls, trained=trained,
                tested=tested)
