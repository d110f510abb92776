"""Putting any CvT checkpoint into a :class:`~cvt_backbone.CvT`, completely or not at all.

One route serves every loader. :func:`load_cvt_weights` (``init_cfg=dict(type='Pretrained')``
and the tools) reads the checkpoint safely, unwraps it, checks its arch and fits its keys;
:func:`cvt_load_state_dict_pre_hook`, which every CvT registers, applies the same fitting
when weights arrive through ``model.load_state_dict``, ``load_from`` or
``mmengine.runner.load_checkpoint``, so foreign key names load there too.

Fitting (:func:`fit_cvt_state_dict`) turns official, transformers and whole-model
(``backbone.*``) checkpoints into this package's names. Keys of another output path are set
aside with a log line (the classifier head; the class-token norm for a feature-map backbone;
per-stage output norms for a class-token backbone), and output norms a checkpoint lacks keep
their initialisation, also with a log line.
"""
from __future__ import annotations

import os
import re
from collections import OrderedDict
from collections.abc import Mapping

import torch
import torch.nn as nn
from mmengine.logging import print_log

from .convert import (arch_differences, arch_from_transformers_config,
                      detect_format, diff_state_dict, short_list, to_cvt_keys,
                      unwrap_state_dict)
from .errors import CheckpointError
from .read import read_checkpoint

_OUTPUT_NORM = re.compile(r'^(norm\d+|cls_norm)\.')
_SET_ASIDE = re.compile(r'^head\.')


def _strip_prefix(state_dict: Mapping[str, torch.Tensor], prefix: str) -> OrderedDict:
    return OrderedDict((k[len(prefix):], v) for k, v in state_dict.items()
                       if k.startswith(prefix))


def check_arch(model: nn.Module, checkpoint_arch: Mapping | None, source: str) -> None:
    """Refuse a checkpoint whose stated arch differs from the model's, naming both.

    Raises:
        CheckpointError: a width, depth, head count, embedding kernel, stride, padding or
            class token differs.
    """
    differences = arch_differences(getattr(model, 'arch', {}), checkpoint_arch or {})
    if differences:
        raise CheckpointError(f'{source} is a CvT of another arch: ' + '; '.join(differences))


def fit_cvt_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor],
                       source: str = 'the checkpoint') -> OrderedDict:
    """Turn a CvT state dict of any format into the keys of ``model`` (without a prefix).

    Args:
        model: The CvT.
        state_dict: Official, transformers or this package's keys, or a whole-model state
            dict with the backbone under ``backbone.``.
        source: Names the checkpoint in log lines.

    Returns:
        The state dict for ``model.load_state_dict``: foreign names converted, other output
        paths' keys set aside, missing output norms filled with the model's current values.
        What is left to differ (missing blocks, wrong shapes) is for the caller to report.
    """
    if detect_format(state_dict) is None and any(k.startswith('backbone.') for k in state_dict):
        state_dict = _strip_prefix(state_dict, 'backbone.')
    state_dict, _ = to_cvt_keys(state_dict)
    own = model.state_dict()
    set_aside = [k for k in state_dict if k not in own
                 and (_SET_ASIDE.match(k) or _OUTPUT_NORM.match(k))]
    fresh = [k for k in own if k not in state_dict and _OUTPUT_NORM.match(k)]
    if set_aside:
        print_log(f'Loading {source}: not used by this backbone: {short_list(set_aside)}',
                  logger='current')
    if fresh:
        print_log(f'Loading {source}: keep their initialisation (not in the checkpoint): '
                  f'{short_list(fresh)}', logger='current')
    fitted = OrderedDict((k, v) for k, v in state_dict.items() if k not in set_aside)
    fitted.update((k, own[k]) for k in fresh)
    return fitted


def cvt_load_state_dict_pre_hook(model: nn.Module, state_dict: dict, prefix: str,
                                 local_metadata: dict, *args) -> None:
    """Fit the keys under ``prefix`` to ``model`` in place, before PyTorch loads them.

    Registered by every CvT (``_register_load_state_dict_pre_hook(..., with_module=True)``),
    so ``load_state_dict``, ``load_from`` and ``load_checkpoint`` accept official,
    transformers and whole-model keys. A state dict without keys under ``prefix`` (a
    checkpoint of other parts of a model) is left alone. When the checkpoint's reader
    attached its arch (``local_metadata['cvt_arch']``, see
    :func:`~cvt_backbone.checkpoint.convert.canonical_checkpoint`), it is checked first.

    Raises:
        CheckpointError: the attached arch differs from the model's.
    """
    keys = [k for k in state_dict if k.startswith(prefix)]
    if not keys:
        return
    source = local_metadata.get('cvt_source', 'the checkpoint')
    check_arch(model, local_metadata.get('cvt_arch'), source)
    local = OrderedDict((k[len(prefix):], state_dict[k]) for k in keys)
    fitted = fit_cvt_state_dict(model, local, source)
    if list(fitted) == list(local) and all(fitted[k] is local[k] for k in fitted):
        return
    for key in keys:
        del state_dict[key]
    state_dict.update((prefix + k, v) for k, v in fitted.items())


def load_cvt_weights(model: nn.Module, source: str | os.PathLike, prefix: str | None = None
                     ) -> None:
    """Load a checkpoint into a :class:`~cvt_backbone.CvT` safely and completely.

    Args:
        model: The backbone.
        source: A file, a transformers folder or an ``http(s)://`` URL holding an official,
            transformers, mmpretrain, mmdet, mmseg or this package's checkpoint.
        prefix: Key prefix of the backbone in a whole-model checkpoint (default
            ``backbone.`` when such keys are there).

    Raises:
        FileNotFoundError: a local path does not exist.
        CheckpointError: it cannot be read safely, states another arch, or does not fill the
            model (missing keys, wrong shapes, unexpected keys); nothing is loaded then.
    """
    name = os.fspath(source) if not isinstance(source, str) else source
    label = f'checkpoint {name!r}'
    checkpoint = read_checkpoint(source)
    state_dict = unwrap_state_dict(checkpoint, label)
    if prefix:
        state_dict = _strip_prefix(state_dict, prefix)
        if not state_dict:
            raise CheckpointError(f'{label} has no keys under the prefix {prefix!r}')
    meta = checkpoint.get('meta') if isinstance(checkpoint, Mapping) else None
    if isinstance(meta, Mapping) and isinstance(meta.get('transformers_config'), Mapping):
        check_arch(model, arch_from_transformers_config(meta['transformers_config']), label)
    fitted = fit_cvt_state_dict(model, state_dict, label)
    diff = diff_state_dict(model.state_dict(), fitted)
    if diff:
        arch = getattr(model, 'arch', None)
        hint = (f' (model arch: embed_dims {arch["embed_dims"]}, depths {arch["depths"]})'
                if isinstance(arch, Mapping) else '')
        raise CheckpointError(f'{label} does not fit this CvT{hint}: {diff.describe()}')
    model.load_state_dict(fitted, strict=True)
    print_log(f'Loaded CvT weights from {name}', logger='current')
