"""The opt-in MMEngine protections: ``import cvt_backbone.engine`` turns them all on.

``import cvt_backbone`` only registers CvT; the project's configs name this module in
``custom_imports`` (and set ``runner_type='CvTRunner'``) and its tools import it. Importing
it changes MMEngine for every model in the process:

* every checkpoint scheme reads through this package's reader, which runs no code; config
  text stored in a checkpoint is removed before MMEngine could run it; inferencers need the
  caller's config and take class names from it (:mod:`.guard`, :mod:`.inference`);
* local files are written atomically (:class:`~.guard.AtomicLocalBackend`);

and registers what configs name: :class:`~.runner.CvTRunner`, the checkpoint hook that
never loses a run and removes only its own files, exact-resume random state and seeded
samplers, CPU mixed precision; plus config preparation and checks for the tools.
"""
from . import guard, inference  # noqa: F401  (MMEngine's loaders, writers, inferencers)
from .config import (ConfigError, check_data_paths, check_model_config, prepare_config,
                     start_cpu_distributed)
from .data import SampleKey, SeededDataset, SeededDefaultSampler, SeededInfiniteSampler
from .hooks import (CompleteCheckpointHook, RandomStateHook, SafeCheckpointHook,
                    check_checkpoint_fits)
from .optim import CpuAmpOptimWrapper
from .runner import CvTRunner

__all__ = [
    'ConfigError', 'check_data_paths', 'check_model_config', 'prepare_config',
    'start_cpu_distributed', 'SampleKey', 'SeededDataset', 'SeededDefaultSampler',
    'SeededInfiniteSampler', 'CompleteCheckpointHook', 'RandomStateHook', 'SafeCheckpointHook',
    'check_checkpoint_fits', 'CpuAmpOptimWrapper', 'CvTRunner'
]
