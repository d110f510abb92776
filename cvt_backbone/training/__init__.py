"""The training components a config names (``custom_imports`` of ``cvt_backbone.training``),
registered in MMEngine's root registries, which the toolboxes' registries fall back to.

Safe loading and saving (:mod:`.loading`, :mod:`.hooks`), exact resume (:mod:`.hooks`,
:mod:`.data`) and CPU mixed precision (:mod:`.amp`); what each recipe names:
``docs/training.md``. Importing this module registers these names and replaces nothing.
"""
from .amp import AutocastFeaturesHook, CpuAmpOptimWrapper, autocast_features
from .data import SampleKey, SeededDataset, SeededDefaultSampler, SeededInfiniteSampler
from .hooks import AtomicLocalBackend, CompleteCheckpointHook, RandomStateHook, SafeCheckpointHook
from .loading import SafeLoadingHook, sanitize_checkpoint, use_safe_loading

__all__ = [
    'AtomicLocalBackend', 'AutocastFeaturesHook', 'CompleteCheckpointHook',
    'CpuAmpOptimWrapper', 'RandomStateHook', 'SafeCheckpointHook', 'SafeLoadingHook',
    'SampleKey', 'SeededDataset', 'SeededDefaultSampler', 'SeededInfiniteSampler',
    'autocast_features', 'sanitize_checkpoint', 'use_safe_loading'
]
