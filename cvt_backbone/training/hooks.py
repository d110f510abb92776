"""Hooks that make MMEngine's checkpoints durable, exactly resumable and complete:
:class:`SafeCheckpointHook`, :class:`RandomStateHook` and :class:`CompleteCheckpointHook`.
What they guarantee is described in docs/guarantees.md.
"""
from __future__ import annotations

import contextlib
import logging
import os
import os.path as osp
import random
import re
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import torch
from mmengine.dist import all_gather_object, get_rank, get_world_size, is_main_process
from mmengine.fileio import LocalBackend, register_backend
from mmengine.hooks import CheckpointHook, Hook
from mmengine.logging import HistoryBuffer, print_log
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS
from mmengine.runner import find_latest_checkpoint

from ..checkpoint import MMENGINE_WRAPPER, check_checkpoint_fits
from ..checkpoint.loading import check_dataset_meta
from ..checkpoint.write import TMP_SUFFIX, atomic_write_bytes, atomic_write_text
from ..errors import CheckpointError
from .loading import FILE_CLAIMS

#: The key of ``meta`` under which :class:`SafeCheckpointHook` stores the random state.
RANDOM_STATE_KEY = 'cvt_random_state'
#: The hidden temporary files of :func:`~cvt_backbone.checkpoint.atomic_write_bytes`.
TEMPORARY = re.compile(r'^\..+\.[0-9a-f]{12}' + re.escape(TMP_SUFFIX) + '$')
#: The file backend :class:`SafeCheckpointHook` writes through (MMEngine's ``backend_args``).
ATOMIC_BACKEND = 'atomic_local'


@register_backend(ATOMIC_BACKEND)
class AtomicLocalBackend(LocalBackend):
    """MMEngine's local storage backend whose :meth:`put` and :meth:`put_text` are atomic and
    durable, registered as :data:`ATOMIC_BACKEND`; the rest is :class:`LocalBackend`'s."""

    def put(self, obj: bytes, filepath: str | Path) -> None:
        """Write bytes to ``filepath`` atomically."""
        atomic_write_bytes(obj, filepath)

    def put_text(self, obj: str, filepath: str | Path, encoding: str = 'utf-8') -> None:
        """Write text to ``filepath`` atomically."""
        atomic_write_bytes(obj.encode(encoding), filepath)


# --------------------------------------------------------------------------- random state
def capture_random_state() -> dict:
    """This process's random generators: Python, NumPy, torch CPU and every CUDA device."""
    state = {'python': random.getstate(), 'numpy': np.random.get_state(),
             'torch': torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def restore_random_state(state: Mapping, source: str) -> None:
    """Put back what :func:`capture_random_state` took.

    Raises:
        CheckpointError: the state is not what :func:`capture_random_state` writes.
    """
    try:
        python = state['python']
        random.setstate((python[0], tuple(python[1]), python[2]))
        np.random.set_state(tuple(state['numpy']))
        torch.set_rng_state(state['torch'])
        if 'cuda' in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state['cuda'])
    except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as err:
        raise CheckpointError(f'{source}: its random state is malformed '
                              f'({type(err).__name__}: {err})') from None


def check_random_state(state: Mapping, source: str) -> None:
    """Refuse a :class:`SafeCheckpointHook` random state whose sampler seed or world size is
    not one a run can use.

    Raises:
        CheckpointError: naming ``source``.
    """
    seed = state.get('sampler_seed')
    if (seed is not None and not (type(seed) is int and 0 <= seed < 1 << 32)) \
            or type(state.get('world_size')) is not int:
        raise CheckpointError(f'Cannot resume from {source}: its random state is malformed (a '
                              f'sampler seed from 0 to 2**32 - 1 and an int world size are '
                              f'needed)')


def _train_sampler(runner):
    loader = runner.train_dataloader
    return getattr(loader, 'sampler', None)


@HOOKS.register_module()
class SafeCheckpointHook(CheckpointHook):
    """MMEngine's ``CheckpointHook`` that never leaves a run without a complete checkpoint and
    removes only checkpoints this process saved in this run.

    Same arguments and file names as ``CheckpointHook``; files are written through
    :class:`AtomicLocalBackend` unless ``backend_args`` names another backend. Differences:

    * an outdated checkpoint (``max_keep_ckpts``, a new best) is removed only after the new
      one is written, not before;
    * checkpoints and ``last_checkpoint`` are written atomically; the hidden temporary files
      of killed saves are removed when training starts;
    * what a resumed checkpoint's ``runtime_info`` says of files (``keep_ckpt_ids``,
      ``best_ckpt*``, ``last_ckpt``) is dropped, so an earlier run's checkpoints stay;
    * each ``meta`` carries every rank's random state and the training sampler's seed
      (gathered from all ranks, so this runs on every rank);
    * scheduler states hold data only: a method kept as an attribute
      (``OneCycleParamScheduler.anneal_func``) would pickle the scheduler itself, which no
      reader of this package accepts; the scheduler sets it again when it is built.
    """

    def __init__(self, *args, backend_args: dict | None = None, **kwargs) -> None:
        super().__init__(*args, backend_args=backend_args or dict(backend=ATOMIC_BACKEND),
                         **kwargs)
        self._saved: set[str] = set()

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        """Drop the callables from each saved parameter scheduler state."""
        schedulers = checkpoint.get('param_schedulers') or []
        groups = schedulers.values() if isinstance(schedulers, dict) else [schedulers]
        for states in groups:
            for state in states:
                for key in [k for k, v in state.items() if callable(v)]:
                    del state[key]

    def before_train(self, runner) -> None:
        """MMEngine's set-up, blind to the resumed checkpoint's file claims; then remove the
        hidden temporary files of killed saves."""
        hub = runner.message_hub
        for key in [k for k in hub.runtime_info if FILE_CLAIMS.match(k)]:
            hub.pop_info(key)
        super().before_train(runner)  # sees no claims: keeps no ids, knows no best file
        if not is_main_process():
            return
        for folder in {self.out_dir, runner.work_dir}:
            if osp.isdir(folder):
                for name in os.listdir(folder):
                    if TEMPORARY.match(name):
                        os.remove(osp.join(folder, name))

    def _path(self, step: int) -> str:
        return self.file_backend.join_path(self.out_dir, self.filename_tmpl.format(step))

    def _remove_own(self, path: str | None) -> None:
        """Remove ``path`` if this process saved it in this run (main process only)."""
        if path not in self._saved or not is_main_process():
            return
        if self.file_backend.isfile(path):
            self.file_backend.remove(path)
        elif self.file_backend.isdir(path):
            self.file_backend.rmtree(path)
        self._saved.discard(path)

    @contextlib.contextmanager
    def _removals_deferred(self) -> Iterator[list]:
        """Collect the backend's ``remove`` / ``rmtree`` calls MMEngine makes; afterwards
        remove those of this run's own files."""
        backend, pending = self.file_backend, []

        class Deferred:
            def __getattr__(self, name):
                return getattr(backend, name)

            def remove(self, path):
                pending.append(path)

            def rmtree(self, path):
                pending.append(path)

        self.file_backend = Deferred()
        try:
            yield pending
        finally:
            self.file_backend = backend
        for path in pending:
            self._remove_own(path)

    def _random_state_meta(self, runner, meta: dict) -> dict:
        states = all_gather_object(capture_random_state())
        sampler = _train_sampler(runner)
        return dict(meta, **{RANDOM_STATE_KEY: dict(
            ranks=states, world_size=get_world_size(),
            sampler_seed=getattr(sampler, 'seed', None))})

    def _save_checkpoint_with_step(self, runner, step, meta) -> None:
        outdated = None
        if self.max_keep_ckpts > 0 and not (self.keep_ckpt_ids
                                            and self.keep_ckpt_ids[-1] == step):
            if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
                outdated = self.keep_ckpt_ids.popleft()
            self.keep_ckpt_ids.append(step)
            runner.message_hub.update_info('keep_ckpt_ids', list(self.keep_ckpt_ids))
        filename = self.filename_tmpl.format(step)
        self.last_ckpt = self.file_backend.join_path(self.out_dir, filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)
        if (is_main_process() and self.last_ckpt not in self._saved
                and self.file_backend.exists(self.last_ckpt)):
            print_log(f'{self.last_ckpt} is an earlier run\'s checkpoint: this run saves its '
                      f'own under that name (checkpoints are named by their epoch or '
                      f'iteration)', logger='current', level=logging.WARNING)
        self._saved.add(self.last_ckpt)
        runner.save_checkpoint(
            self.out_dir, filename, self.file_client_args, save_optimizer=self.save_optimizer,
            save_param_scheduler=self.save_param_scheduler,
            meta=self._random_state_meta(runner, meta), by_epoch=self.by_epoch,
            backend_args=self.backend_args, **self.args)
        if not is_main_process():
            return
        atomic_write_text(self.last_ckpt, osp.join(runner.work_dir, 'last_checkpoint'))
        if outdated is not None and outdated != step:
            self._remove_own(self._path(outdated))

    def _save_best_checkpoint(self, runner, metrics) -> None:
        with self._removals_deferred():
            super()._save_best_checkpoint(runner, metrics)
            if self.save_best:
                best = ([self.best_ckpt_path] if len(self.key_indicators) == 1
                        else list(self.best_ckpt_path_dict.values()))
                self._saved.update(path for path in best if path)


@HOOKS.register_module()
class RandomStateHook(Hook):
    """Keep the training's random streams a function of the training alone.

    * What data-loader iterators and validation draw from the global generators is undone:
      the state before each is put back at the epoch's first iteration (and after
      validation), so a resumed run draws what the uninterrupted run draws.
    * With ``resume=True`` the random state of a :class:`SafeCheckpointHook` checkpoint, and
      the training sampler's seed, are put back at the first training iteration; a
      checkpoint without it resumes with a warning.

    Args:
        resume: Whether the Runner resumes; None (the default): as its config's ``resume``
            says (``tools/train.py --resume`` and the toolboxes' own set it).
    """

    priority = 'VERY_HIGH'

    def __init__(self, resume: bool | None = None) -> None:
        self.resume = resume
        self._pending: dict | None = None

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        resume = self.resume if self.resume is not None else bool(runner.cfg.get('resume'))
        if not resume:
            return
        meta = checkpoint.get('meta')
        state = meta.get(RANDOM_STATE_KEY) if isinstance(meta, Mapping) else None
        if not isinstance(state, Mapping) or not isinstance(state.get('ranks'), list):
            print_log('The checkpoint holds no random state (written by an older version or '
                      "by MMEngine's CheckpointHook): training resumes, but its random "
                      'draws (augmentations, dropout, stochastic depth) differ from an '
                      'uninterrupted run', logger='current', level=logging.WARNING)
            return
        load_from = runner.cfg.get('load_from')
        check_random_state(state, f'checkpoint {load_from!r}' if load_from
                           else 'the resumed checkpoint')
        seed, world_size = state.get('sampler_seed'), state['world_size']
        if world_size != get_world_size() or len(state['ranks']) <= get_rank():
            print_log(f"The checkpoint was written by {state.get('world_size')} processes and "
                      f'this run has {get_world_size()}: its random state is not restored',
                      logger='current', level=logging.WARNING)
            return
        self._pending = state['ranks'][get_rank()]
        sampler = _train_sampler(runner)
        if seed is not None and hasattr(sampler, 'seed'):
            sampler.seed = seed

    def before_train_epoch(self, runner) -> None:
        if self._pending is None:
            self._pending = capture_random_state()

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        if self._pending is not None:
            restore_random_state(self._pending, 'the resumed checkpoint')
            self._pending = None

    def before_val_epoch(self, runner) -> None:
        self._before_val = capture_random_state()

    def after_val_epoch(self, runner, metrics=None) -> None:
        restore_random_state(self._before_val, 'the state before validation')


# --------------------------------------------------------------------------- completeness
#: Epoch and iteration counters above this are no training's.
MAX_COUNTER = 1 << 31


def _departure(given: object, template: object, where: str) -> str | None:
    """Where ``given`` departs from the shape of ``template`` (this run's own state), or None.

    Mappings have no keys the template lacks (missing ones keep this run's value), lists and
    tuples its length, tensors its shape and dtype, other values its type (an int may stand
    for a float; ints fit in 64 bits)."""
    if isinstance(template, Mapping):
        if not isinstance(given, Mapping):
            return f'{where} is a {type(given).__name__}, not a mapping'
        extra = [k for k in given if k not in template]
        if extra:
            return f'{where} has keys this run does not: {extra[0]!r:.60}'
        for key in given.keys() & template.keys():
            problem = _departure(given[key], template[key], f'{where}[{key!r}]')
            if problem:
                return problem
        return None
    if isinstance(template, (list, tuple)):
        if type(given) is not type(template) or len(given) != len(template):
            return (f'{where} is a {type(given).__name__} of {len(given)} where this run '
                    f'has a {type(template).__name__} of {len(template)}'
                    if isinstance(given, (list, tuple)) else
                    f'{where} is a {type(given).__name__}, not a {type(template).__name__}')
        for index, (item, own) in enumerate(zip(given, template)):
            problem = _departure(item, own, f'{where}[{index}]')
            if problem:
                return problem
        return None
    if isinstance(template, torch.Tensor):
        same = (isinstance(given, torch.Tensor) and given.shape == template.shape
                and given.dtype == template.dtype)
        return None if same else f'{where} is not a tensor of the shape and dtype this run has'
    kinds = (int, float) if type(template) is float else (type(template), )
    if type(given) not in kinds or (type(given) is int and not -1 << 63 <= given < 1 << 63):
        return (f'{where} is the {type(given).__name__} {given!r:.40} where this run has a '
                f'{type(template).__name__}')
    return None


def _check_training_state(runner, checkpoint: Mapping, source: str) -> None:
    """Refuse a resume checkpoint whose training state MMEngine would choke on: its state
    must have the shape of this run's own (:func:`_departure`)."""
    meta = checkpoint.get('meta') if isinstance(checkpoint, Mapping) else None
    if not isinstance(meta, Mapping) or not all(
            type(meta.get(k)) is int and 0 <= meta[k] < MAX_COUNTER for k in ('epoch', 'iter')):
        raise CheckpointError(f'Cannot resume from {source}: it holds no training state '
                              f"(no 'meta' with epoch and iter counters from 0 to 2**31); use "
                              f'load_from for a weights-only checkpoint')
    seed = meta.get('seed')
    if seed is not None and not (type(seed) is int and 0 <= seed < 1 << 32):
        raise CheckpointError(f'Cannot resume from {source}: its meta.seed {seed!r:.40} is no '
                              f'seed (an integer from 0 to 2**32 - 1)')
    if meta.get('dataset_meta') is not None:
        check_dataset_meta(meta['dataset_meta'], f'Cannot resume from {source}')
    if isinstance(meta.get(RANDOM_STATE_KEY), Mapping):
        check_random_state(meta[RANDOM_STATE_KEY], source)
    hub = checkpoint.get('message_hub')
    if not isinstance(hub, Mapping) or not all(
            isinstance(hub.get(k), Mapping) and all(isinstance(key, str) for key in hub[k])
            for k in ('log_scalars', 'runtime_info', 'resumed_keys')) or not all(
            isinstance(v, HistoryBuffer) for v in hub['log_scalars'].values()):
        raise CheckpointError(f'Cannot resume from {source}: its message_hub is not the '
                              f'state MMEngine writes (log_scalars of HistoryBuffers, '
                              f'runtime_info, resumed_keys, under str keys)')
    optimizer = checkpoint.get('optimizer')
    if optimizer is not None:
        _check_optimizer_state(runner.optim_wrapper, optimizer, source)
    schedulers = checkpoint.get('param_schedulers')
    if schedulers is not None:
        problem = _departure(schedulers, _scheduler_states(runner), 'param_schedulers')
        if problem:
            raise CheckpointError(f'Cannot resume from {source}: its {problem}')
    ema = checkpoint.get('ema_state_dict')
    if ema is not None:  # MMEngine's EMAHook swaps these weights into the model
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        averaged = {k[len('module.'):]: v for k, v in ema.items() if k.startswith('module.')} \
            if isinstance(ema, Mapping) else ema
        check_checkpoint_fits(model, averaged, f'{source} (its ema_state_dict)',
                              MMENGINE_WRAPPER)


def _scheduler_states(runner) -> list | dict:
    """This run's parameter scheduler states as they are saved (data only)."""
    def states(schedulers) -> list:
        return [{k: v for k, v in scheduler.state_dict().items() if not callable(v)}
                for scheduler in schedulers]

    schedulers = runner.param_schedulers or []
    return ({name: states(group) for name, group in schedulers.items()}
            if isinstance(schedulers, Mapping) else states(schedulers))


def _check_optimizer_state(optim_wrapper, state: object, source: str) -> None:
    optimizers = (dict(optim_wrapper.items()) if hasattr(optim_wrapper, 'items')
                  and not hasattr(optim_wrapper, 'optimizer') else {'': optim_wrapper})
    states = state if '' not in optimizers else {'': state}
    for name, wrapper in optimizers.items():
        given = states.get(name) if isinstance(states, Mapping) else None
        label = f'optimizer {name}' if name else 'optimizer'
        groups = given.get('param_groups') if isinstance(given, Mapping) else None
        per_param = given.get('state') if isinstance(given, Mapping) else None
        if not isinstance(groups, list) or not isinstance(per_param, Mapping) or not all(
                isinstance(g, Mapping) and isinstance(g.get('params'), list) for g in groups):
            raise CheckpointError(f'Cannot resume from {source}: its {label} state is not a '
                                  f"torch optimizer state ('state' and 'param_groups')")
        own = wrapper.optimizer.param_groups
        if [len(g['params']) for g in groups] != [len(g['params']) for g in own]:
            raise CheckpointError(
                f'Cannot resume from {source}: its {label} has parameter groups of '
                f"{[len(g['params']) for g in groups]} parameters, this run's optimizer "
                f"{[len(g['params']) for g in own]}")
        for index, (group, own_group) in enumerate(zip(groups, own)):
            settings = {k: v for k, v in own_group.items() if k != 'params'}
            problem = _departure({k: v for k, v in group.items() if k in settings}, settings,
                                 f'{label} param_groups[{index}]')
            if problem:  # torch keeps a setting it does not know; one it knows must fit
                raise CheckpointError(f'Cannot resume from {source}: its {problem}')
        params = {index: param for group, own_group in zip(groups, own)
                  for index, param in zip(group['params'], own_group['params'])}
        for index, entries in per_param.items():
            if index not in params or not isinstance(entries, Mapping):
                raise CheckpointError(f'Cannot resume from {source}: its {label} state names '
                                      f'parameter {index!r}, which its groups do not have')
            for key, value in entries.items():
                if (isinstance(value, torch.Tensor) and value.dim() > 0
                        and value.shape != params[index].shape):
                    raise CheckpointError(
                        f'Cannot resume from {source}: its {label} state {key!r} of '
                        f'parameter {index} has shape {tuple(value.shape)}, the parameter '
                        f'{tuple(params[index].shape)}')


@HOOKS.register_module()
class CompleteCheckpointHook(Hook):
    """Make the Runner refuse a checkpoint that does not fill the whole model.

    It checks in ``after_load_checkpoint``, which MMEngine calls before it copies the weights
    into the model, so a refused checkpoint changes nothing.

    Args:
        path: The checkpoint the Runner will load; None for ``--resume`` without a path (the
            latest checkpoint in the work dir).
        training_state: Also require MMEngine's training state (for resuming).
    """

    priority = 'HIGHEST'

    def __init__(self, path: str | None = None, training_state: bool = False) -> None:
        self.path = path
        self.training_state = training_state

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        """Check ``checkpoint`` against the runner's model (and optimizer, for a resume).

        Raises:
            CheckpointError: a missing key, a wrong shape, or malformed training state.
        """
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        path = self.path or find_latest_checkpoint(runner.work_dir)
        source = f'checkpoint {path!r}'
        if self.training_state:
            _check_training_state(runner, checkpoint, source)
        check_checkpoint_fits(model, checkpoint, source, MMENGINE_WRAPPER)


__all__ = ['AtomicLocalBackend', 'SafeCheckpointHook', 'RandomStateHook',
           'CompleteCheckpointHook', 'capture_random_state', 'restore_random_state']
