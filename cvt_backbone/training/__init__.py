"""The training components a config names, registered in MMEngine's root registries (which
the registries of mmpretrain, mmdet and mmsegmentation fall back to).

A config imports them with ``custom_imports = dict(imports=['cvt_backbone',
'cvt_backbone.training'], allow_failed_imports=False)`` and names what it uses; the
project's configs take them from ``configs/_base_/cvt_runtime.py``:

* :class:`SafeLoadingHook` (``custom_hooks``): every checkpoint the Runner reads goes through
  the package's decoder, which runs no code;
* :class:`SafeCheckpointHook` (``default_hooks.checkpoint``): atomic checkpoints, the newest
  one always kept, only this run's own files removed, random state saved;
* :class:`RandomStateHook` (``custom_hooks``), :class:`SeededDefaultSampler` /
  :class:`SeededInfiniteSampler` and :class:`SeededDataset` (the training dataloader): a
  resumed run continues exactly as the uninterrupted one;
* :class:`CpuAmpOptimWrapper` and :class:`AutocastFeaturesHook`: mixed precision on the
  feature extractor, on the CPU too;
* :class:`CompleteCheckpointHook`: refuse a checkpoint that does not fill the model.

Importing this module registers these names and nothing else; it replaces nothing of
MMEngine's.
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
