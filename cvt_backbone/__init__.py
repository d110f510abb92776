"""cvt-backbone: CvT (Convolutional vision Transformer) for mmpretrain, mmdet and mmseg.

Importing the package checks torch, NumPy and mmengine against the supported versions
(:mod:`cvt_backbone.version`) and registers: :class:`CvT` in MMEngine's root ``MODELS``
registry, which the registries of mmpretrain, mmdet and mmsegmentation fall back to; and,
where mmpretrain is installed, the configs' model index in mmpretrain's model hub
(:func:`~cvt_backbone.checkpoint.zoo.register_model_index`). It replaces nothing in another
package. CvT's own loaders (``init_cfg``, ``pretrained``, :func:`load_cvt_weights`, the
converter) always read through :func:`read_checkpoint`, which runs no code from a checkpoint.
The training components a config can name (safe checkpoint loading and saving, exact resume,
CPU mixed precision) are in :mod:`cvt_backbone.training`.
"""
from .version import __version__, check_core

check_core()  # before anything that would fail deeper on an unsupported torch

from .checkpoint import convert_official_cvt, load_cvt_weights, read_checkpoint  # noqa: E402
from .checkpoint.zoo import register_model_index  # noqa: E402
from .errors import CheckpointError, ConfigError  # noqa: E402
from .models import CvT, QuickGELU  # noqa: E402

register_model_index()

__all__ = ['CvT', 'QuickGELU', 'CheckpointError', 'ConfigError', 'convert_official_cvt',
           'load_cvt_weights', 'read_checkpoint', '__version__']
