"""The Runner of the project's configs, and what ``tools/train.py`` and ``tools/test.py``
share: loading a config, building the Runner, and turning the errors a user can fix into one
``error:`` line."""
from __future__ import annotations

import copy
import inspect
import logging
import os.path as osp
import sys
from collections.abc import Callable

from mmengine.config import Config
from mmengine.dist import master_only
from mmengine.logging import print_log
from mmengine.registry import RUNNERS
from mmengine.runner import BaseLoop, Runner

from ..checkpoint import CheckpointError, atomic_write_text
from .config import (ConfigError, fit_schedule, seed_training_data, start_cpu_distributed,
                     use_safe_checkpoint_hook)
from .hooks import RandomStateHook

#: Errors whose message says all a user needs: the tools print them as one line.
USER_ERRORS = (CheckpointError, ConfigError, FileNotFoundError)


def load_config(path: str, options: dict | None = None) -> tuple[Config, Config]:
    """Read a config file and apply ``--cfg-options``.

    Returns:
        The config to run, and the config as the file says it.

    Raises:
        ConfigError: the file does not exist.
    """
    if not osp.isfile(path):
        raise ConfigError(f'config file {path!r} does not exist')
    original = Config.fromfile(path)
    cfg = copy.deepcopy(original)
    if options:
        cfg.merge_from_dict(options)
    return cfg, original


def _is_random_state_hook(hook: object) -> bool:
    kind = hook.get('type') if isinstance(hook, dict) else type(hook)
    return kind is RandomStateHook or (isinstance(kind, str)
                                       and kind.split('.')[-1] == 'RandomStateHook')


@RUNNERS.register_module()
class CvTRunner(Runner):
    """MMEngine's Runner with the checkpoints and training data that survive an interruption.

    The project's configs name it (``runner_type='CvTRunner'``), so that whatever builds their
    Runner, ``tools/train.py`` or a toolbox's own, gets:

    * :class:`~.hooks.SafeCheckpointHook` in place of MMEngine's ``CheckpointHook`` (same
      settings): the newest complete checkpoint always survives, and files are removed only
      if this work dir's runs wrote them;
    * the seeded samplers and dataset of :mod:`.data` in place of MMEngine's
      ``DefaultSampler`` / ``InfiniteSampler`` for training, and a
      :class:`~.hooks.RandomStateHook` unless the config has one: a resumed run continues
      exactly as the uninterrupted one;
    * parameter schedulers fitted to the run (:func:`~.config.fit_schedule`): once the
      training data is loaded, the length of an epoch is known;
    * the copy of the config in the work dir written atomically (MMEngine truncates and
      rewrites it; a kill at that moment left half a config).

    Arguments are the Runner's.
    """

    def __init__(self, *args, **kwargs) -> None:
        bound = inspect.signature(Runner.__init__).bind(self, *args, **kwargs)
        arguments = bound.arguments
        default_hooks = dict(arguments.get('default_hooks') or {})
        use_safe_checkpoint_hook(default_hooks)
        arguments['default_hooks'] = default_hooks
        loader = arguments.get('train_dataloader')
        if isinstance(loader, dict):
            loader = copy.deepcopy(loader)
            seed_training_data(loader)
            arguments['train_dataloader'] = loader
            hooks = list(arguments.get('custom_hooks') or [])
            if not any(map(_is_random_state_hook, hooks)):
                hooks.append(dict(type='RandomStateHook',
                                  resume=bool(arguments.get('resume', False))))
            arguments['custom_hooks'] = hooks
        super().__init__(*bound.args[1:], **bound.kwargs)

    def build_param_scheduler(self, scheduler: dict | list | None) -> list | dict:
        """MMEngine's, from scheduler configs fitted to this run's iterations first."""
        configs = [scheduler] if isinstance(scheduler, dict) and 'type' in scheduler \
            else scheduler
        if isinstance(self._train_loop, BaseLoop) and isinstance(configs, (list, tuple)) \
                and all(isinstance(s, dict) for s in configs):
            epoch_length = len(self.train_dataloader)
            written = self.cfg.get('schedule_length') or {}
            written_for = (written.get('max_epochs', 0) * epoch_length
                           or written.get('max_iters')) or None
            scheduler, message = fit_schedule(configs, epoch_length, self.max_iters, written_for)
            if message:
                print_log(message, logger='current', level=logging.WARNING)
        return super().build_param_scheduler(scheduler)

    @master_only
    def dump_config(self) -> None:
        """Write the config to the work dir (old file or whole new one, never part)."""
        name = osp.basename(self.cfg.filename) if self.cfg.filename else f'{self.timestamp}.py'
        if not name.endswith('.py'):  # MMEngine dumps other formats through its file backend
            return super().dump_config()
        atomic_write_text(self.cfg.pretty_text, osp.join(self.work_dir, name))


def build_runner(cfg: Config) -> Runner:
    """The config's Runner (``runner_type`` if it names one, else :class:`CvTRunner`), with
    CPU distributed started."""
    start_cpu_distributed(cfg)
    return RUNNERS.build(cfg) if 'runner_type' in cfg else CvTRunner.from_cfg(cfg)


def run_tool(main: Callable[[], object], errors: tuple[type[Exception], ...] = ()) -> None:
    """Run a tool's ``main``; a :data:`USER_ERRORS` error, or one of the tool's own
    ``errors``, ends it with one ``error:`` line."""
    try:
        main()
    except (*USER_ERRORS, *errors) as err:
        sys.exit(f'error: {err}')
