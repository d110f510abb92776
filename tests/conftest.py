"""Shared test set-up."""
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
