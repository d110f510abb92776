"""Put this package's models into the model registries of mmpretrain, mmdet and mmseg.

After ``import cvt_backbone``, ``dict(type='CvT', ...)`` builds from each toolbox's
``MODELS`` registry, so configs of all three can use it through
``custom_imports=dict(imports=['cvt_backbone'], allow_failed_imports=False)``.
"""
from mmdet.registry import MODELS as MMDET_MODELS
from mmpretrain.registry import MODELS as MMPRETRAIN_MODELS
from mmseg.registry import MODELS as MMSEG_MODELS

from .models import CvT

REGISTRIES = {'mmpretrain': MMPRETRAIN_MODELS, 'mmdet': MMDET_MODELS, 'mmseg': MMSEG_MODELS}

for _registry in REGISTRIES.values():
    _registry.register_module(module=CvT)
