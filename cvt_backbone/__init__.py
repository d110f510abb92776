"""cvt-backbone: CvT (Convolutional vision Transformer) for mmpretrain, mmdet and mmseg.

Importing the package registers :class:`CvT` in the three toolboxes' model registries and
makes MMEngine load every local checkpoint with ``weights_only=True`` and write it atomically.
"""
from . import fileio  # noqa: F401  (atomic checkpoint writes)
from .checkpoint import (CheckpointError, convert_official_cvt, load_checkpoint_file,
                         load_cvt_weights)
from .models import CvT, QuickGELU
from .registration import REGISTRIES
from .version import __version__

__all__ = ['CvT', 'QuickGELU', 'CheckpointError', 'convert_official_cvt',
           'load_checkpoint_file', 'load_cvt_weights', 'REGISTRIES', '__version__']
