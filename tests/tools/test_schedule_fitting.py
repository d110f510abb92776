"""A training loop that ``--cfg-options`` shortened gets a schedule of the same shape from
``tools/train.py``, on any number of iterations per epoch; what still does not fit is clipped
as MMEngine's Runner would, and the log line says so.

The schedulers are built with MMEngine's own builder on a one-parameter optimizer and
stepped as its ``ParamSchedulerHook`` steps them: iteration-based ones after every
iteration, epoch-based ones after every epoch.
"""
from __future__ import annotations

import copy
import math

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import PARAM_SCHEDULERS

from schedule_fitting import fit_runner_schedule, fit_schedule, shortened_from
from tests.helpers import ROOT

BASE_LR = 1.0


def trajectory(schedulers: list[dict], epoch_length: int, max_iters: int) -> list[float]:
    """The learning rate of every iteration of a run, as MMEngine's Runner would set it."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=BASE_LR)
    built = []
    for scheduler in copy.deepcopy(schedulers):
        # the Runner's default end: the end of training, in the scheduler's unit
        scheduler.setdefault('end', max_iters // epoch_length if scheduler.get('by_epoch', True)
                             else max_iters)
        built.append(PARAM_SCHEDULERS.build(scheduler, default_args=dict(
            optimizer=optimizer, epoch_length=epoch_length)))
    rates = []
    for it in range(max_iters):
        rates.append(optimizer.param_groups[0]['lr'])
        for scheduler in built:
            if not scheduler.by_epoch:
                scheduler.step()
        if (it + 1) % epoch_length == 0:
            for scheduler in built:
                if scheduler.by_epoch:
                    scheduler.step()
    return rates


def config_schedule(path: str) -> tuple[list[dict], dict]:
    cfg = Config.fromfile(ROOT / path)
    return [dict(s) for s in cfg.param_scheduler], cfg.train_cfg


def assert_same_shape(short: list[float], full: list[float], tolerance: float) -> None:
    """Each rate of the short run lies within the full run's rates around the same fraction
    of training (one iteration either side: milestones round to whole iterations)."""
    ratio = len(full) / len(short)
    for k, rate in enumerate(short):
        lo, hi = max(math.floor((k - 1) * ratio), 0), min(math.ceil((k + 2) * ratio), len(full))
        window = full[lo:hi]
        assert min(window) - tolerance <= rate <= max(window) + tolerance, (k, rate, window)


@pytest.mark.parametrize('epoch_length', [3, 10, 50])
def test_the_imagenet_recipe_shortened_to_3_epochs_warms_up_then_decays(epoch_length):
    schedule, loop = config_schedule('configs/cvt/cvt-13_8xb256_in1k-224px.py')
    assert loop.max_epochs == 300
    max_iters = 3 * epoch_length
    fitted, said = fit_schedule(schedule, epoch_length, max_iters, 300 * epoch_length)
    assert said.startswith(f'param_scheduler: the loop is shorter than the {300 * epoch_length} '
                           f'iterations the schedule was written for: every milestone was scaled '
                           f'by 0.01 to the {max_iters} iterations of this run')
    rates = trajectory(fitted, epoch_length, max_iters)
    warmup = round(5 / 300 * max_iters)  # iterations: 0, 0, 2 (0.15, 0.5, 2.5 rounded)
    if warmup > 1:
        assert rates[0] == pytest.approx(schedule[0]['start_factor'])  # 1e-6, as the recipe
        assert rates.index(max(rates)) == warmup - 1                 # warmed up
    else:  # less than one step of warm-up: none, rather than one stuck at its start
        assert [s['type'] for s in fitted] == ['CosineAnnealingLR']
        assert rates[0] == pytest.approx(BASE_LR)
    assert max(rates) > 0.9 * BASE_LR
    assert rates[-1] < 0.15 * BASE_LR                   # and the cosine nearly ends
    top = rates.index(max(rates))
    assert all(a >= b for a, b in zip(rates[top:], rates[top + 1:]))  # decaying after it
    if epoch_length >= 50:  # enough iterations for the shape to show
        full = trajectory(schedule, epoch_length, 300 * epoch_length)
        assert_same_shape(rates, full, tolerance=0.05)


@pytest.mark.parametrize('epoch_length', [2, 4, 16])
def test_the_demo_classifier_shortened_to_one_epoch(epoch_length):
    schedule, _ = config_schedule('configs/demo/cvt-tiny_shapes-cls.py')
    fitted, said = fit_schedule(schedule, epoch_length, epoch_length, 8 * epoch_length)
    rates = trajectory(fitted, epoch_length, epoch_length)
    warmup = epoch_length // 8  # one epoch of 8: 0.25, 0.5, 2 iterations
    if warmup < 2:  # one iteration of warm-up would stay at 1 %: left out
        assert '[0] LinearLR epochs 0..1 left out (one iteration)' in said
        assert [(s['type'], s['begin']) for s in fitted] == [('CosineAnnealingLR', 1)]
        assert rates[0] == rates[1] == pytest.approx(BASE_LR)
    else:
        assert [(s['begin'], s.get('end')) for s in fitted] == [(0, 2), (2, None)]
        assert rates[0] == pytest.approx(0.01) and rates[1] == pytest.approx(BASE_LR)
    if epoch_length > 2:  # the cosine has a step to take
        assert rates[-1] < rates[1]


def test_the_coco_1x_schedule_shortened_keeps_warm_up_and_steps_in_proportion():
    schedule, loop = config_schedule('configs/mask_rcnn/mask-rcnn_cvt-13_fpn_1x_coco.py')
    assert [s['type'] for s in schedule] == ['LinearLR', 'MultiStepLR']
    fitted, _ = fit_schedule(schedule, 1000, 3000, 12 * 1000)
    assert fitted[0]['end'] == 250 and fitted[1]['milestones'] == [2000, 2750]
    rates = trajectory(fitted, 1000, 3000)
    assert rates[250] == pytest.approx(BASE_LR)
    assert rates[1999] == pytest.approx(BASE_LR) and rates[2000] == pytest.approx(0.1)
    assert rates[2750] == pytest.approx(0.01)


def test_the_ade20k_iteration_schedule_shortened_to_100_iterations():
    schedule, loop = config_schedule('configs/upernet/upernet_cvt-13_4xb4-160k_ade20k-512x512.py')
    fitted, _ = fit_schedule(schedule, 5, 100, loop.max_iters)
    rates = trajectory(fitted, 5, 100)
    assert max(rates) > 0.95 * BASE_LR and rates[-1] < 0.02 * BASE_LR


RECIPES = {
    'multi-step': [dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=50),
                   dict(type='MultiStepLR', by_epoch=True, begin=0, end=20, milestones=[12, 17],
                        gamma=0.1)],
    'cosine': [dict(type='LinearLR', start_factor=0.01, by_epoch=True, begin=0, end=2,
                    convert_to_iter_based=True),
               dict(type='CosineAnnealingLR', by_epoch=True, begin=2, eta_min=0.0,
                    convert_to_iter_based=True)],
    'poly': [dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=30),
             dict(type='PolyLR', eta_min=0.0, power=1.0, begin=30, end=200, by_epoch=False)],
    'one-cycle': [dict(type='OneCycleLR', eta_max=BASE_LR, by_epoch=True, total_steps=20,
                       convert_to_iter_based=True)],
    'step': [dict(type='StepLR', by_epoch=True, step_size=5, gamma=0.5)],
}


@pytest.mark.parametrize('name', RECIPES)
@pytest.mark.parametrize('epoch_length', [10, 20])
def test_common_recipes_keep_their_shape_at_a_quarter_of_the_length(name, epoch_length):
    full_iters = 20 * epoch_length
    schedule = [dict(s) for s in RECIPES[name]]
    full = trajectory(schedule, epoch_length, full_iters)
    fitted, said = fit_schedule(schedule, epoch_length, full_iters // 4, full_iters)
    assert said
    short = trajectory(fitted, epoch_length, full_iters // 4)
    # an epoch-stepping scheduler is a staircase in the full run, smooth in the short one
    assert_same_shape(short, full, tolerance=0.2 * BASE_LR if name == 'step' else 0.08)
    assert max(short) > 0.5 * max(full)


def test_a_schedule_that_fits_is_left_as_it_is():
    schedule, _ = config_schedule('configs/demo/cvt-tiny_shapes-cls.py')
    fitted, said = fit_schedule(schedule, 10, 80)
    assert said is None and fitted == schedule


def test_a_warm_up_longer_than_the_run_is_clipped_and_said():
    schedule, _ = config_schedule('configs/mask_rcnn/mask-rcnn_cvt-13_fpn_1x_coco.py')
    assert schedule[0]['type'] == 'LinearLR' and schedule[0]['end'] == 1000  # iterations
    fitted, said = fit_schedule(schedule, 7, 84, 7 * 12 * 2)  # 12 epochs of 14 iterations, as 6
    assert fitted[0]['end'] == 84 and '[0] clipped to the end of training' in said
    assert all(s['begin'] < s.get('end', 84) <= 84 for s in fitted)


def test_a_scheduler_that_begins_after_the_end_is_left_out_and_said():
    schedule = [dict(type='LinearLR', by_epoch=True, begin=0, end=1),
                dict(type='ConstantLR', by_epoch=True, begin=1, end=2),
                dict(type='CosineAnnealingLR', by_epoch=True, begin=2, end=8)]
    fitted, said = fit_schedule(schedule, 1, 2, 8)
    assert fitted == []  # nothing of them spans two iterations of this run
    assert '[1] ConstantLR epochs 1..2 left out (it begins after the end of training)' in said


def test_a_shortened_loop_is_told_from_the_config_it_came_from():
    written = Config.fromfile(ROOT / 'configs/demo/cvt-tiny_shapes-cls.py')
    cfg = copy.deepcopy(written)
    cfg.train_cfg.max_epochs = 2
    assert shortened_from(cfg, written) == ('epoch', written.train_cfg.max_epochs)
    assert shortened_from(written, written) is None
    longer = copy.deepcopy(written)
    longer.train_cfg.max_epochs = 100
    assert shortened_from(longer, written) is None


def test_the_runners_schedule_is_fitted_before_it_trains(tmp_path):
    """MMEngine's own Runner, its scheduler configs fitted as tools/train.py does once the
    data's length is known."""
    from mmengine.model import BaseModel
    from mmengine.runner import Runner

    class Model(BaseModel):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))

        def forward(self, *inputs, mode='loss'):
            return dict(loss=(self.weight - torch.cat(inputs).mean()) ** 2)

    runner = Runner(
        model=Model(), work_dir=str(tmp_path),
        train_dataloader=dict(dataset=[torch.ones(1)] * 3, batch_size=1, collate_fn=list,
                              sampler=dict(type='DefaultSampler', shuffle=False)),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=BASE_LR)),
        train_cfg=dict(by_epoch=True, max_epochs=3),
        param_scheduler=[dict(type='LinearLR', start_factor=1e-6 / 2e-3, by_epoch=True, end=5,
                              convert_to_iter_based=True),
                         dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=5)],
        default_hooks=dict(checkpoint=None, logger=dict(type='LoggerHook', interval=1)))
    fit_runner_schedule(runner, ('epoch', 300))
    runner.train()
    assert len(runner.param_schedulers) == 1  # a warm-up of 0.15 iterations: none
    cosine, = runner.param_schedulers
    assert (cosine.begin, cosine.end, cosine.by_epoch) == (1, 9, False)
    assert runner.optim_wrapper.get_lr()['lr'][0] < 0.1 * BASE_LR  # decayed, not stuck
