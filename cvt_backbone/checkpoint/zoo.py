"""The published CvT weights: official file names, hub repositories, what each was trained on.

The hub repositories (``microsoft/cvt-*``) hold the official ``.pth`` files converted to
transformers' names, as ``pytorch_model.bin`` next to a ``config.json``; any of these loads
here from its URL (:func:`url`), a local copy of either form, or a downloaded snapshot. The
top-1 figures are the official README's (microsoft/CvT), not measured here.
"""
from __future__ import annotations

import glob
import importlib.util
import os.path as osp
import warnings
from dataclasses import dataclass

#: The config families whose ``metafile.yml`` form the model index (beside the package in a
#: source checkout or an editable install).
CONFIGS = osp.join(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))), 'configs')


@dataclass(frozen=True)
class PublishedWeights:
    """One published checkpoint.

    Attributes:
        arch: The CvT preset.
        official_file: Its name on the official model zoo (OneDrive).
        hub_repo: Its repository on the Hugging Face hub.
        resolution: Training and test resolution (square).
        pretraining: ``'ImageNet-1k'``, or ``'ImageNet-22k'`` (then fine-tuned on 1k).
        top1: ImageNet-1k top-1 (%) as the official README states it.
    """

    arch: str
    official_file: str
    hub_repo: str
    resolution: int
    pretraining: str
    top1: float


PUBLISHED = (
    PublishedWeights('cvt-13', 'CvT-13-224x224-IN-1k.pth', 'microsoft/cvt-13', 224,
                     'ImageNet-1k', 81.6),
    PublishedWeights('cvt-21', 'CvT-21-224x224-IN-1k.pth', 'microsoft/cvt-21', 224,
                     'ImageNet-1k', 82.5),
    PublishedWeights('cvt-13', 'CvT-13-384x384-IN-1k.pth', 'microsoft/cvt-13-384', 384,
                     'ImageNet-1k', 83.0),
    PublishedWeights('cvt-21', 'CvT-21-384x384-IN-1k.pth', 'microsoft/cvt-21-384', 384,
                     'ImageNet-1k', 83.3),
    PublishedWeights('cvt-13', 'CvT-13-384x384-IN-22k.pth', 'microsoft/cvt-13-384-22k', 384,
                     'ImageNet-22k', 83.3),
    PublishedWeights('cvt-21', 'CvT-21-384x384-IN-22k.pth', 'microsoft/cvt-21-384-22k', 384,
                     'ImageNet-22k', 84.9),
    PublishedWeights('cvt-w24', 'CvT-w24-384x384-IN-22k.pth', 'microsoft/cvt-w24-384-22k', 384,
                     'ImageNet-22k', 87.6),
)


def url(hub_repo: str, filename: str = 'pytorch_model.bin') -> str:
    """The download URL of a file of a hub repository (its ``main`` revision)."""
    return f'https://huggingface.co/{hub_repo}/resolve/main/{filename}'


def markdown_table() -> str:
    """The model zoo as the Markdown table README.md and docs/weights.md show.

    Each row names the mmpretrain config that evaluates the weights as they are: the
    ``configs/cvt/`` config of their arch and resolution.

    Returns:
        The table, one line per row, ending in a newline.
    """
    lines = ['| official file | hub repository | arch | resolution | pretraining '
             '| ImageNet-1k top-1 (official) | evaluate with |',
             '|---|---|---|---|---|---|---|']
    for weights in PUBLISHED:
        pretraining = ('ImageNet-22k, fine-tuned on 1k' if weights.pretraining == 'ImageNet-22k'
                       else weights.pretraining)
        batch = 256 if weights.resolution == 224 else 128
        config = f'configs/cvt/{weights.arch}_8xb{batch}_in1k-{weights.resolution}px.py'
        lines.append(
            f'| `{weights.official_file}` | [`{weights.hub_repo}`]'
            f'(https://huggingface.co/{weights.hub_repo}) | {weights.arch} '
            f'| {weights.resolution} | {pretraining} | {weights.top1} | `{config}` |')
    return '\n'.join(lines) + '\n'


def register_model_index(configs: str = CONFIGS) -> list[str]:
    """Register the config families' ``metafile.yml`` with mmpretrain's model hub.

    Then ``mmpretrain.list_models('*cvt*')``, ``mmpretrain.get_model(name, pretrained=True)``
    and ``ImageClassificationInferencer(name)`` know the models by name. Does nothing
    without mmpretrain or without the ``configs/`` folder; names already registered are
    kept.

    Returns:
        The names registered now.
    """
    metafiles = sorted(glob.glob(osp.join(configs, '*', 'metafile.yml')))
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
