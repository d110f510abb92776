"""What ``tools/train.py`` and ``tools/test.py`` share: loading a config, building the Runner,
and turning the errors a user can fix into one ``error:`` line."""
from __future__ import annotations

import copy
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
from .config import ConfigError, fit_schedule, start_cpu_distributed

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


@RUNNERS.register_module()
class AtomicDumpRunner(Runner):
    """MMEngine's Runner whose copy of the config in the work dir is written atomically.

    MMEngine truncates and rewrites ``<work_dir>/<config>.py`` when a run starts; a kill at
    that moment left a half-written config. Its parameter schedulers fit the run
    (:func:`~.config.fit_schedule`): once the training data is loaded, the length of an
    epoch is known. Everything else is the Runner's.
    """

    def build_param_scheduler(self, scheduler):
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
    """The config's Runner (``runner_type`` if it names one, else :class:`AtomicDumpRunner`),
    with CPU distributed started."""
    start_cpu_distributed(cfg)
    return RUNNERS.build(cfg) if 'runner_type' in cfg else AtomicDumpRunner.from_cfg(cfg)


def run_tool(main: Callable[[], object], errors: tuple[type[Exception], ...] = ()) -> None:
    """Run a tool's ``main``; a :data:`USER_ERRORS` error, or one of the tool's own
    ``errors``, ends it with one ``error:`` line."""
    try:
        main()
    except (*USER_ERRORS, *errors) as err:
        sys.exit(f'error: {err}')
