"""cvt-backbone: CvT (Convolutional vision Transformer) for mmpretrain, mmdet and mmseg.

Importing the package registers :class:`CvT` in the model registry of each installed
toolbox, and makes MMEngine read every checkpoint with this package's reader (no code from
a checkpoint ever runs) and write every local file atomically
(:mod:`cvt_backbone.checkpoint.guard`). torch, mmengine, mmcv and the toolboxes are checked
against the supported versions first (:mod:`cvt_backbone.versions`).
"""
from . import versions as _versions

_versions.check_core()  # before anything that would fail deeper on an unsupported torch or mmcv

from . import engine  # noqa: F401  (hooks, samplers and optimizer wrappers of the tools)
from .checkpoint import (CheckpointError, convert_official_cvt, load_cvt_weights,
                         read_checkpoint)
from .checkpoint import guard as _guard  # noqa: F401  (MMEngine's loaders made safe)
from .models import CvT, QuickGELU
from .registration import REGISTRIES
from .version import __version__

__all__ = ['CvT', 'QuickGELU', 'CheckpointError', 'convert_official_cvt', 'load_cvt_weights',
           'read_checkpoint', 'REGISTRIES', '__version__']
