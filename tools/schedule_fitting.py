"""Parameter schedules fitted to runs that ``--cfg-options`` shortened.

``tools/train.py CONFIG --cfg-options train_cfg.max_epochs=3`` on a config written for 300
epochs would, as written, spend the run in its warm-up and never decay. :func:`fit_schedule`
scales every milestone to the shortened run instead; ``tools/train.py`` applies it (and
says so in the log) whenever the options shorten the loop. The toolboxes' own
``tools/train.py`` runs such a config as written.
"""
from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

from mmengine.config import Config
from mmengine.logging import print_log
from mmengine.runner import Runner


def _type_name(part: object) -> str:
    kind = part.get('type', '') if isinstance(part, Mapping) else ''
    return kind.__name__ if isinstance(kind, type) else str(kind).split('.')[-1]


def _schedule_length(cfg: Config | dict) -> tuple[str, int] | None:
    """``('epoch', max_epochs)`` or ``('iter', max_iters)`` of a config's training loop."""
    loop = cfg.get('train_cfg') or {}
    if 'max_iters' in loop and _type_name(loop) != 'EpochBasedTrainLoop':
        return 'iter', loop['max_iters']
    if 'max_epochs' in loop:
        return 'epoch', loop['max_epochs']
    return None


def shortened_from(cfg: Config, original: Config) -> tuple[str, int] | None:
    """The loop length the config file states (``('epoch', 300)``), when ``--cfg-options``
    made the run's loop shorter; else None."""
    length, first = _schedule_length(cfg), _schedule_length(original)
    if length and first and length[0] == first[0] and length[1] < first[1]:
        return first
    return None


def fit_runner_schedule(runner: Runner, written: tuple[str, int]) -> None:
    """Give a Runner that has not started training the config's schedulers fitted to its
    shortened loop (:func:`fit_schedule`), with one log line saying what changed.

    ``runner.param_schedulers`` holds the scheduler configs until ``runner.train()`` builds
    them; the epoch length is known once the training dataloader is built.
    """
    schedulers = runner.param_schedulers
    if not schedulers or not (isinstance(schedulers, dict) and 'type' in schedulers
                              or isinstance(schedulers, (list, tuple))):
        return  # none, or one list per optimizer: left as written
    epoch_length = len(runner.train_dataloader)
    written_for = written[1] * (epoch_length if written[0] == 'epoch' else 1)
    fitted, message = fit_schedule(schedulers, epoch_length, runner.max_iters, written_for)
    runner.param_schedulers = fitted
    if message:
        print_log(message, logger='current')


#: Scheduler arguments counted in the scheduler's steps (epochs or iterations), besides
#: ``begin`` and ``end``: MMEngine's step, multi-step, cosine, one-cycle and restart schedulers.
STEP_COUNTS = ('T_max', 'step_size', 'total_steps')
STEP_LISTS = ('milestones', 'periods')


def fit_schedule(schedulers: dict | Sequence[dict], epoch_length: int, max_iters: int,
                 written_for: int | None = None) -> tuple[list[dict], str | None]:
    """Fit parameter scheduler configs to a shortened run, keeping their shape.

    Everything is measured in iterations of this run (an epoch-based scheduler's epochs
    count ``epoch_length`` each). When the loop is shorter than the one the schedule was
    written for (``written_for``, e.g. 300 epochs of the file run as 3 with
    ``--cfg-options``), every milestone shrinks by ``max_iters / written_for``: a warm-up of
    5 epochs out of 300 stays 1/60 of the run, and a cosine still ends at its end. Every
    scheduler then steps per iteration (``by_epoch=False``, whole iterations), so that a
    fraction of an epoch is not rounded away as ``convert_to_iter_based`` would (a warm-up of
    0.05 epochs on 3 iterations per epoch is 0 iterations there, and MMEngine stops with
    ``end should be larger than begin``). A milestone that falls inside the first iteration
    becomes the first, for every scheduler alike, so the warm-up and what follows keep their
    order. A scheduler left with a single iteration is left out: MMEngine's linear warm-up
    over one iteration never leaves its start factor (a run of 10 iterations per epoch would
    stay at 1 % of its learning rate), and no other scheduler changes anything in one.

    A scheduler that does not fit the run even so (a warm-up of 500 iterations in a run of
    60, one that begins after the last iteration) is clipped to the run, or left out when
    nothing of it is left, as MMEngine's own Runner would run it; the log line says so.

    Args:
        schedulers: ``param_scheduler`` of a config (one dict or a list).
        epoch_length: Iterations per epoch of this run (``len(train_dataloader)``).
        max_iters: Iterations of this run.
        written_for: Iterations the schedule was written for, when the loop was shortened.

    Returns:
        The scheduler configs to build, and a log line saying what changed (None if nothing).
    """
    items = [copy.deepcopy(dict(s)) for s in (
        [schedulers] if isinstance(schedulers, dict) else schedulers)]
    factor = max_iters / written_for if written_for and written_for > max_iters else 1.0

    def at(value: float, unit: int) -> int:
        scaled = value * unit * factor
        return max(round(scaled), 1) if scaled > 0 else 0

    fitted, changes = [], []
    for i, s in enumerate(items):
        unit = epoch_length if s.get('by_epoch', True) else 1
        new = {k: v for k, v in s.items() if k != 'convert_to_iter_based'}
        new.update(by_epoch=False, begin=at(s.get('begin', 0), unit))
        if s.get('end') not in (None, float('inf')):
            new['end'] = at(s['end'], unit)
        for key in STEP_COUNTS:
            if s.get(key) is not None:
                new[key] = max(at(s[key], unit), 1)
        for key in STEP_LISTS:
            if s.get(key) is not None:
                new[key] = [at(v, unit) for v in s[key]]
        if new.get('end', max_iters) > max_iters:
            new['end'] = max_iters
            changes.append(f'[{i}] clipped to the end of training')
        if new['begin'] >= new.get('end', max_iters):
            changes.append(f"[{i}] {s.get('type')} {_span(s)} left out (it begins after the "
                           f'end of training)')
            continue
        if 'end' in new and new['end'] - new['begin'] == 1:
            changes.append(f"[{i}] {s.get('type')} {_span(s)} left out (one iteration)")
            continue
        fitted.append(new)
        changes.append(f"[{i}] {s.get('type')} {_span(s)} -> {_span(new)}")
    if factor == 1.0:
        return items, None
    return fitted, (f'param_scheduler: the loop is shorter than the {written_for} iterations '
                    f'the schedule was written for: every milestone was scaled by {factor:.4g} '
                    f'to the {max_iters} iterations of this run ({epoch_length} per epoch), each '
                    f'scheduler stepping per iteration ({"; ".join(changes)})')


def _span(scheduler: dict) -> str:
    """``'epochs 0..5'``, ``'iterations 3..9'`` (``end`` defaults to the end of training)."""
    units = 'epochs' if scheduler.get('by_epoch', True) else 'iterations'
    return f"{units} {scheduler.get('begin', 0):g}..{scheduler.get('end', 'end')}"


