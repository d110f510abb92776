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


@pytest.fixture(scope='session')
def shapes_cls(tmp_path_factory) -> Path:
    """16 + 4 generated 32x32 classification images (the demo's generator)."""
    from cvt_backbone.demo.shapes import make_classification_set
    root = tmp_path_factory.mktemp('data') / 'shapes_cls'
    make_classification_set(str(root), num_train=16, num_val=4, size=32)
    return root
