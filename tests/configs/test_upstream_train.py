"""The toolboxes' own ``tools/train.py`` (shipped inside mmdet and mmseg) runs the project's
demo detector and segmentor, shortened with ``--cfg-options`` as users shorten runs: the
configs are stock configs on MMEngine's own Runner, which clips the schedule and trains."""
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from demo_shapes import make_scene_set
from tests.helpers import ENV, ROOT

pytestmark = pytest.mark.slow  # two training runs in subprocesses


@pytest.fixture(scope='module')
def scenes_cwd(tmp_path_factory) -> Path:
    """A folder holding ``data/shapes/``, where the demo configs look for their scenes."""
    cwd = tmp_path_factory.mktemp('upstream')
    make_scene_set(str(cwd / 'data' / 'shapes'), num_train=4, num_val=2)
    return cwd


@pytest.mark.parametrize('toolbox, config, shortened, checkpoint', [
    ('mmdet', 'mask-rcnn_cvt-tiny_fpn_shapes.py', 'train_cfg.max_epochs=1', 'epoch_1.pth'),
    ('mmseg', 'upernet_cvt-tiny_shapes.py', 'train_cfg.max_iters=4', 'iter_4.pth'),
])
def test_the_toolboxs_own_train_py_trains_a_shortened_demo_config(scenes_cwd, toolbox, config,
                                                                  shortened, checkpoint):
    train_py = Path(importlib.util.find_spec(toolbox).origin).parent / '.mim' / 'tools' / \
        'train.py'
    work_dir = scenes_cwd / f'work_{toolbox}'
    result = subprocess.run(
        [sys.executable, str(train_py), str(ROOT / 'configs' / 'demo' / config),
         '--work-dir', str(work_dir), '--cfg-options', shortened, 'model.backbone.init_cfg=None'],
        cwd=scenes_cwd, env=ENV, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert (work_dir / checkpoint).is_file()
