"""cvt-backbone: CvT (Convolutional vision Transformer) for mmpretrain, mmdet and mmseg.

Importing the package checks torch, mmengine, mmcv and the toolboxes against the supported
versions (:mod:`cvt_backbone.versions`) and registers :class:`CvT` in the model registry of
each installed toolbox; it changes nothing else in the process. CvT's own loaders
(``init_cfg``, ``pretrained``, :func:`load_cvt_weights`, the converter) always read through
:func:`read_checkpoint`, which runs no code from a checkpoint. MMEngine-wide protections
(every checkpoint scheme read safely, atomic writes, the checkpoint hook that never loses a
run, seeded samplers) are the opt-in :mod:`cvt_backbone.engine`, which the project's configs
name in ``custom_imports``.
"""
from . import versions as _versions

_versions.check_core()  # before anything that would fail deeper on an unsupported torch or mmcv

from .checkpoint import (CheckpointError, convert_official_cvt, load_cvt_weights,
                         read_checkpoint)
from .models import CvT, QuickGELU
from .registration import REGISTRIES
from .version import __version__

__all__ = ['CvT', 'QuickGELU', 'CheckpointError', 'convert_official_cvt', 'load_cvt_weights',
           'read_checkpoint', 'REGISTRIES', '__version__']
