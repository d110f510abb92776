"""A shortened training loop gets a schedule that fits it, or one line saying what to set."""
import copy

import pytest
from mmengine.config import Config

from cvt_backbone.engine import ConfigError
from cvt_backbone.engine.config import fit_schedule
from tests.helpers import ROOT


def shortened(path: str, **loop) -> tuple[Config, str | None]:
    """The config of ``path`` with ``train_cfg`` changed as ``--cfg-options`` would."""
    original = Config.fromfile(ROOT / path)
    cfg = copy.deepcopy(original)
    cfg.train_cfg.update(loop)
    return cfg, fit_schedule(cfg, original)


def assert_fits(cfg: Config, total: int) -> None:
    for s in cfg.param_scheduler:
        assert 0 <= s.get('begin', 0) < s.get('end', total) <= total, s


@pytest.mark.parametrize('path, epochs, length', [
    ('configs/cvt/cvt-13_8xb256_in1k-224px.py', 3, 300),
    ('configs/demo/cvt-tiny_shapes-cls.py', 1, 8),
])
def test_a_shortened_epoch_loop_shrinks_every_scheduler(path, epochs, length):
    before = Config.fromfile(ROOT / path).param_scheduler
    # as MMEngine would stop: a scheduler ending after, or beginning at, the end of training
    assert any(s.get('end', 0) > epochs or s.get('begin', 0) >= epochs for s in before)
    cfg, said = shortened(path, max_epochs=epochs)
    assert_fits(cfg, epochs)
    assert said.startswith(f'train_cfg.max_epochs={epochs} is shorter than the {length} of '
                           f'the config: the schedule was shortened to fit (')
    warmup, main = before[0], cfg.param_scheduler[0]
    assert main['end'] / epochs == pytest.approx(warmup['end'] / length)  # same share


def test_a_shortened_iteration_loop_shrinks_every_scheduler():
    cfg, said = shortened('configs/demo/upernet_cvt-tiny_shapes.py', max_iters=100)
    assert_fits(cfg, 100)
    assert cfg.param_scheduler[0]['end'] == 5 and cfg.param_scheduler[1]['end'] == 100
    assert 'train_cfg.max_iters=100 is shorter than the 1000' in said


def test_a_loop_that_fits_its_schedule_is_left_alone():
    path = 'configs/demo/cvt-tiny_shapes-cls.py'
    before = Config.fromfile(ROOT / path).param_scheduler
    cfg, said = shortened(path, max_epochs=8)
    assert said is None and cfg.param_scheduler == before


def test_a_schedule_that_cannot_shrink_in_whole_epochs_names_what_to_set():
    cfg = Config(dict(
        train_cfg=dict(by_epoch=True, max_epochs=1),
        param_scheduler=[dict(type='LinearLR', by_epoch=True, begin=0, end=1),
                         dict(type='CosineAnnealingLR', by_epoch=True, begin=1, end=6),
                         dict(type='ConstantLR', by_epoch=True, begin=6, end=8)]))
    original = Config(dict(train_cfg=dict(by_epoch=True, max_epochs=8)))
    with pytest.raises(ConfigError, match=r'^train_cfg.max_epochs=1 is too short for '
                       r'param_scheduler\[2\] \(ConstantLR\) in whole epochs: set '
                       r'param_scheduler.2.begin and .end as well, or convert it to '
                       r'iterations \(convert_to_iter_based=True\)$'):
        fit_schedule(cfg, original)
