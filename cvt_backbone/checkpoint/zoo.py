"""The published CvT weights by name: mmpretrain's model hub, and ``hf://`` checkpoints.

``import cvt_backbone`` registers ``configs/cvt/metafile.yml`` with mmpretrain's model hub
(:func:`register_model_index`) and the checkpoint scheme ``hf://`` in MMEngine's
``CheckpointLoader`` (:func:`load_from_hub`); see docs/weights.md.
"""
from __future__ import annotations

import glob
import importlib.util
import os.path as osp
import warnings

from mmengine.runner import CheckpointLoader

from .convert import canonical_checkpoint
from .read import read_checkpoint

#: The config families, beside the package in a source checkout or an editable install.
CONFIGS = osp.join(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))), 'configs')
#: The families whose models mmpretrain's hub serves (classifiers).
MODEL_INDEX = ('cvt', )


@CheckpointLoader.register_scheme(prefixes='hf://')
def load_from_hub(filename: str, map_location: object = None) -> object:
    """MMEngine's loader of ``hf://owner/name[@revision]``: the hub repository read safely,
    in the layout of an mmpretrain classifier checkpoint."""
    checkpoint = read_checkpoint(filename, map_location or 'cpu')
    return canonical_checkpoint(checkpoint, f'checkpoint {filename!r}')


def register_model_index(configs: str = CONFIGS) -> list[str]:
    """Register the ``metafile.yml`` of :data:`MODEL_INDEX` with mmpretrain's model hub.

    Does nothing without mmpretrain or without the ``configs/`` folder; a file whose models
    are registered already is left as it is.

    Returns:
        The names registered now.
    """
    metafiles = [path for family in MODEL_INDEX
                 for path in glob.glob(osp.join(configs, family, 'metafile.yml'))]
    if not metafiles or importlib.util.find_spec('mmpretrain') is None:
        return []
    try:
        from mmpretrain.apis.model import ModelHub
        from modelindex.load_model_index import load
    except ImportError as err:  # a broken mmpretrain must not break the backbone
        warnings.warn(f'cvt_backbone: the model index is not registered with mmpretrain '
                      f'({err})', stacklevel=2)
        return []
    registered = []
    for metafile in metafiles:
        names = [model.name.lower() for model in load(metafile).models]
        if not any(ModelHub.has(name) for name in names):
            ModelHub.register_model_index(metafile, config_prefix=osp.dirname(configs))
            registered += names
    return registered
