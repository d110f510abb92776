"""Checks the tools make of a config before MMEngine builds anything from it.

* :func:`check_data_paths`: a dataset's root, annotation file or image folder that does not
  exist is named, with where the data layouts are explained;
* :func:`check_model_config`: necks and heads fed by a CvT backbone must expect its
  channels; the mismatch is named with the value to set.
"""
from __future__ import annotations

import os.path as osp
from collections.abc import Iterator, Sequence

import torch
from mmengine.config import Config

from cvt_backbone import ConfigError, CvT

#: Where a missing dataset is explained; a config may say more in a ``data_hint`` string.
DATA_HINT = 'Data layouts for COCO, ADE20K and ImageNet: docs/training.md, "Data"'


def _datasets(cfg: dict, field: str) -> Iterator[tuple[str, dict]]:
    """Yield every leaf dataset config and its field (through wrappers such as
    ``SeededDataset`` or ``RepeatDataset``)."""
    if not isinstance(cfg, dict):
        return
    if isinstance(cfg.get('dataset'), dict):
        yield from _datasets(cfg['dataset'], f'{field}.dataset')
    elif isinstance(cfg.get('datasets'), (list, tuple)):
        for i, dataset in enumerate(cfg['datasets']):
            yield from _datasets(dataset, f'{field}.datasets.{i}')
    else:
        yield field, cfg


def dataset_paths(dataset: dict) -> list[tuple[str, str]]:
    """The ``(field, path)`` pairs a dataset config reads from disk."""
    root = dataset.get('data_root') or ''
    paths = [('data_root', root)] if root else []
    if dataset.get('ann_file'):
        paths.append(('ann_file', osp.join(root, dataset['ann_file'])))
    prefix = dataset.get('data_prefix')
    if isinstance(prefix, str):
        prefix = {'img': prefix}
    for key, value in (prefix or {}).items():
        if isinstance(value, str) and value:
            paths.append((f'data_prefix.{key}', osp.join(root, value)))
    if isinstance(dataset.get('split'), str) and not prefix and not dataset.get('ann_file'):
        # mmpretrain's ImageNet-style datasets read <data_root>/<split>/
        paths.append(('split', osp.join(root, dataset['split'])))
    return paths


def check_data_paths(cfg: Config, loaders: Sequence[str]) -> None:
    """Fail early, naming the path, when a dataset of ``loaders`` points at nothing.

    Raises:
        FileNotFoundError: a data root, annotation file or image folder does not exist.
    """
    for loader in loaders:
        loader_cfg = cfg.get(loader)
        if not loader_cfg:
            continue
        for where, dataset in _datasets(loader_cfg.get('dataset'), f'{loader}.dataset'):
            for field, path in dataset_paths(dataset):
                if path.startswith(('http://', 'https://', 's3://')) or osp.exists(path):
                    continue
                raise FileNotFoundError(f'{where}.{field}: {path!r} does not exist. '
                                        f"{cfg.get('data_hint') or DATA_HINT}.")


def _is_cvt(backbone: object) -> bool:
    """Whether a backbone config builds :class:`CvT` (``'CvT'``, ``'mmdet.CvT'`` or the class)."""
    if not isinstance(backbone, dict):
        return False
    kind = backbone.get('type')
    if isinstance(kind, type):
        return issubclass(kind, CvT)
    return isinstance(kind, str) and kind.split('.')[-1] == 'CvT'


def cvt_output_channels(backbone: dict) -> list[int]:
    """Channels of each map a CvT backbone config outputs, in output order.

    The whole backbone config is checked by building it on PyTorch's ``meta`` device (no
    memory, no weights, milliseconds even for CvT-W24); the channels come from
    :meth:`CvT.describe_outputs`.

    Args:
        backbone: ``model.backbone`` of a config, of type CvT.

    Returns:
        The channels of each output.

    Raises:
        ConfigError: the backbone config itself is invalid (unknown arch, bad out_indices...).
    """
    kwargs = {k: v for k, v in backbone.items() if k not in ('type', '_scope_')}
    try:
        with torch.device('meta'):
            CvT(**kwargs)
        outputs = CvT.describe_outputs(kwargs.get('arch', 'cvt-13'), kwargs.get('out_indices'),
                                       kwargs.get('out_type', 'featmap'))
    except (ValueError, TypeError) as err:
        raise ConfigError(f'model.backbone: {err}') from None
    return [output['num_chs'] for output in outputs]


def _describe(backbone: dict, channels: list[int]) -> str:
    return (f"the CvT backbone (arch {backbone.get('arch', 'cvt-13')!r}, out_indices "
            f"{backbone.get('out_indices', 'default')}) outputs {len(channels)} map(s) of "
            f'{channels} channels')


def _check_head(head: dict, field: str, backbone: dict, channels: list[int]) -> None:
    """Check an mmseg decode/auxiliary head: ``in_channels[j]`` vs ``channels[in_index[j]]``."""
    in_index, in_channels = head.get('in_index', -1), head.get('in_channels')
    if in_channels is None:
        return
    indices = list(in_index) if isinstance(in_index, (list, tuple)) else [in_index]
    given = list(in_channels) if isinstance(in_channels, (list, tuple)) else [in_channels]
    bad = [i for i in indices if not isinstance(i, int) or not -len(channels) <= i < len(channels)]
    if bad:
        raise ConfigError(f'{field}.in_index {in_index} is out of range: '
                          f'{_describe(backbone, channels)} (valid: 0..{len(channels) - 1})')
    wanted = [channels[i] for i in indices]
    if given != wanted:
        valid = wanted if isinstance(in_channels, (list, tuple)) else wanted[0]
        raise ConfigError(f'{field}.in_channels is {in_channels} for in_index {in_index}, but '
                          f'{_describe(backbone, channels)}: set {field}.in_channels={valid}')


def check_model_config(cfg: Config | dict) -> None:
    """Check that the parts fed by a CvT backbone expect its channels, before building.

    Checked: an FPN-like ``model.neck`` (list-valued ``in_channels``: one entry per backbone
    output); without a neck, mmseg's ``model.decode_head`` and ``model.auxiliary_head``
    (``in_channels`` against the outputs picked by ``in_index``) and an mmpretrain
    ``model.head`` (``in_channels`` against the last output; a ``GlobalAveragePooling`` neck
    keeps channels). Configs without a CvT backbone pass unchecked.

    Args:
        cfg: A whole config (with ``model``) or a model config.

    Raises:
        ConfigError: a mismatch; the message names the field, the backbone's channels and the
            value to set. Also an invalid backbone config.
    """
    model = cfg.get('model', cfg)
    backbone = model.get('backbone') if isinstance(model, dict) else None
    if not _is_cvt(backbone):
        return
    channels = cvt_output_channels(backbone)
    pretrained = model.get('pretrained')
    if pretrained and backbone.get('init_cfg'):
        raise ConfigError(f'model.pretrained is {pretrained!r} (from the base config?) and '
                          f'model.backbone.init_cfg is set too: mmseg hands model.pretrained to '
                          f'the backbone; set model.pretrained=None')
    neck = model.get('neck')
    first_neck = neck[0] if isinstance(neck, (list, tuple)) and neck else neck
    if isinstance(first_neck, dict) and 'type' not in first_neck:
        field = 'model.neck' if first_neck is neck else 'model.neck[0]'
        raise ConfigError(f'{field} has no type: the base config has no neck there (its '
                          f'heads read the backbone directly), so remove {field} and set the '
                          f"heads' in_channels / in_index instead")
    if isinstance(first_neck, dict) and isinstance(first_neck.get('in_channels'), (list, tuple)):
        field = 'model.neck' if first_neck is neck else 'model.neck[0]'
        if list(first_neck['in_channels']) != channels:
            raise ConfigError(f"{field}.in_channels is {first_neck['in_channels']}, but "
                              f'{_describe(backbone, channels)}: set {field}.in_channels='
                              f'{channels}')
        return
    keeps_channels = first_neck is None or (
        isinstance(first_neck, dict)
        and str(first_neck.get('type', '')).split('.')[-1] == 'GlobalAveragePooling')
    if not keeps_channels:
        return
    for name in ('decode_head', 'auxiliary_head'):
        heads = model.get(name)
        for i, head in enumerate(heads if isinstance(heads, (list, tuple)) else [heads]):
            if isinstance(head, dict):
                field = f'model.{name}' if head is heads else f'model.{name}[{i}]'
                _check_head(head, field, backbone, channels)
    head = model.get('head')
    if isinstance(head, dict) and isinstance(head.get('in_channels'), int) \
            and head['in_channels'] != channels[-1]:
        raise ConfigError(f"model.head.in_channels is {head['in_channels']}, but "
                          f'{_describe(backbone, channels)} (the head reads the last): set '
                          f'model.head.in_channels={channels[-1]}')
