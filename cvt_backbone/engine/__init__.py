"""What the tools add to MMEngine's Runner: config preparation and checks, hooks for complete,
durable and exactly resumable checkpoints, seeded training data, CPU mixed precision; and
class names for the toolboxes' inferencers (:mod:`.inference`)."""
from . import inference  # noqa: F401  (inferencers: class names from the config)
from .config import (ConfigError, check_data_paths, check_model_config, prepare_config,
                     start_cpu_distributed)
from .data import SampleKey, SeededDataset, SeededDefaultSampler, SeededInfiniteSampler
from .hooks import (CompleteCheckpointHook, RandomStateHook, SafeCheckpointHook,
                    check_checkpoint_fits)
from .optim import CpuAmpOptimWrapper

__all__ = [
    'ConfigError', 'check_data_paths', 'check_model_config', 'prepare_config',
    'start_cpu_distributed', 'SampleKey', 'SeededDataset', 'SeededDefaultSampler',
    'SeededInfiniteSampler', 'CompleteCheckpointHook', 'RandomStateHook', 'SafeCheckpointHook',
    'check_checkpoint_fits', 'CpuAmpOptimWrapper'
]
