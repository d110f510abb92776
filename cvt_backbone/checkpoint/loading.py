"""Putting checkpoints into models completely or not at all.

Every loader of a CvT fits keys (:func:`fit_cvt_state_dict`) and checks the arch the same
way: :func:`load_cvt_weights` directly, and :func:`cvt_load_state_dict_pre_hook` where
weights arrive through ``load_state_dict``, ``load_from`` or ``load_checkpoint``. Whole
models: :func:`check_checkpoint_fits` and :func:`diff_on_meta`.
"""
from __future__ import annotations

import os
import re
from collections import OrderedDict
from collections.abc import Callable, Mapping

import torch
import torch.nn as nn
from mmengine.logging import print_log

from ..errors import CheckpointError
from .convert import (
    ANY_WRAPPER,
    BACKBONE_PREFIX,
    MMENGINE_WRAPPER,
    StateDictDiff,
    arch_differences,
    arch_from_transformers_config,
    detect_format,
    diff_state_dict,
    short_list,
    to_cvt_keys,
    unwrap_state_dict,
)
from .read import read_checkpoint

_OUTPUT_NORM = re.compile(r'^(norm\d{1,3}|cls_norm)\.')
_SET_ASIDE = re.compile(r'^head\.')
_EMBEDDING = re.compile(r'^stages\.(\d{1,3})\.patch_embed\.projection\.weight$')
_BLOCK = re.compile(r'^stages\.(\d{1,3})\.blocks\.(\d{1,3})\.')


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


def check_visible_arch(model: nn.Module, state_dict: Mapping[str, torch.Tensor],
                       source: str) -> None:
    """Refuse CvT weights (this package's names) of another arch than ``model``'s.

    For each stage the weights hold, its width and embedding kernel (from the embedding's
    weight) and its depth (the blocks it numbers) must be the model's: a checkpoint of
    CvT-13 loaded into CvT-21 would otherwise leave six blocks of every stage at random.

    Raises:
        CheckpointError: a stage the model lacks, or one of another width, kernel or depth;
            each is named.
    """
    arch = model.arch
    depths: dict[int, int] = {}
    differences = []
    for key, value in state_dict.items():
        if match := _BLOCK.match(key):
            stage, block = int(match[1]), int(match[2])
            depths[stage] = max(depths.get(stage, 0), block + 1)
        elif (match := _EMBEDDING.match(key)) and int(match[1]) < len(arch['embed_dims']):
            stage = int(match[1])
            found = (tuple(value.shape[:1]), tuple(value.shape[2:]))
            wanted = ((arch['embed_dims'][stage], ), (arch['patch_sizes'][stage], ) * 2)
            if found != wanted:
                differences.append(f'stage {stage} embeds with {tuple(value.shape)} in the '
                                   f'checkpoint vs width {wanted[0][0]} and kernel '
                                   f'{wanted[1][0]} in the model')
    for stage, depth in sorted(depths.items()):
        if stage >= len(arch['depths']):
            differences.append(f'stage {stage} in the checkpoint, which the model (stages '
                               f'0..{len(arch["depths"]) - 1}) lacks')
        elif depth != arch['depths'][stage]:
            differences.append(f'stage {stage} has {depth} blocks in the checkpoint vs '
                               f'{arch["depths"][stage]} in the model')
    if differences:
        raise CheckpointError(f'{source} is a CvT of another arch: ' + '; '.join(differences))


def fit_cvt_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor],
                       source: str = 'the checkpoint') -> OrderedDict:
    """Turn a CvT state dict of any format into the keys of ``model`` (without a prefix).

    Args:
        model: The CvT.
        state_dict: Official, transformers or this package's keys, or a whole-model state
            dict with the backbone under ``backbone.``.
        source: Names the checkpoint in log lines and errors.

    Returns:
        The state dict for ``model.load_state_dict``: foreign names converted, other output
        paths' keys set aside, missing output norms filled with the model's current values.
        What is left to differ (missing keys, wrong shapes) is for the caller to report.

    Raises:
        CheckpointError: the weights are those of another arch (:func:`check_visible_arch`).
    """
    if detect_format(state_dict) is None and any(k.startswith(BACKBONE_PREFIX)
                                                 for k in state_dict):
        state_dict = _strip_prefix(state_dict, BACKBONE_PREFIX)
    state_dict, _ = to_cvt_keys(state_dict)
    check_visible_arch(model, state_dict, source)
    own = model.state_dict()
    set_aside = dict.fromkeys(k for k in state_dict if k not in own
                              and (_SET_ASIDE.match(k) or _OUTPUT_NORM.match(k)))
    fresh = [k for k in own if k not in state_dict and _OUTPUT_NORM.match(k)]
    if set_aside:
        print_log(f'Loading {source}: not used by this backbone: {short_list(list(set_aside))}',
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
    transformers and whole-model keys, and refuse weights of another arch. A state dict
    without keys under ``prefix`` (a checkpoint of other parts of a model) is left alone.

    Raises:
        CheckpointError: the weights are those of another arch.
    """
    keys = [k for k in state_dict if k.startswith(prefix)]
    if not keys:
        return
    local = OrderedDict((k[len(prefix):], state_dict[k]) for k in keys)
    fitted = fit_cvt_state_dict(model, local, 'the checkpoint')
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
        source: A file, a transformers folder, an ``http(s)://`` URL or a hub repository id
            holding an official, transformers, mmpretrain, mmdet, mmseg or this package's
            checkpoint.
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


def diff_on_meta(build: Callable[[], nn.Module], state_dict: Mapping[str, torch.Tensor]
                 ) -> StateDictDiff:
    """Build a model on PyTorch's ``meta`` device (no memory, no weights) and compare its
    keys and shapes with ``state_dict``.

    A model whose every tensor has the shape of one in ``state_dict`` is no larger than the
    weights a file really holds: build it for real only then.
    """
    with torch.device('meta'):
        model = build()
    return diff_state_dict(model.state_dict(), state_dict)


def check_checkpoint_fits(model: nn.Module, checkpoint: object, source: str,
                          wrappers: tuple[str, ...] = ANY_WRAPPER) -> None:
    """Refuse a checkpoint that would leave some of ``model``'s weights unloaded.

    MMEngine loads with ``strict=False``, keeping random weights where keys are missing or
    mismatched. Keys the model does not have are allowed, as MMEngine ignores them.
    ``wrappers`` says where the loader that follows looks (:data:`~.convert.MMENGINE_WRAPPER`
    before MMEngine's loaders).

    Raises:
        CheckpointError: no state dict of tensors, missing keys or shape mismatches; the
            message names them.
    """
    state = unwrap_state_dict(checkpoint, source, wrappers)
    if wrappers == MMENGINE_WRAPPER:
        state = _as_mmengine_loads(checkpoint, source)
    diff = diff_state_dict(model.state_dict(), state)
    if diff.missing or diff.mismatched:
        raise CheckpointError(f'{source} does not fit the model of this config: '
                              f'{diff.describe()}')


def _as_mmengine_loads(checkpoint: Mapping, source: str) -> OrderedDict:
    """The state dict as MMEngine's loaders will load it: each key's ``module.`` prefix
    removed (by ``^module.`` or ``^module\\.``, as the call site has it).

    Raises:
        CheckpointError: a key the two patterns treat differently, or two keys that load
            into one.
    """
    raw = checkpoint['state_dict'] if 'state_dict' in checkpoint else checkpoint
    odd = [k for k in raw if k.startswith('module') and not k.startswith('module.')
           and len(k) > len('module')]
    if odd:
        raise CheckpointError(f'{source} has keys {short_list(odd)} that MMEngine\'s loaders '
                              f'rename or not depending on where they are called')
    loaded = OrderedDict()
    for key, value in raw.items():
        name = key[len('module.'):] if key.startswith('module.') else key
        if name in loaded:
            raise CheckpointError(f'{source} has two keys that load into {name!r}')
        loaded[name] = value
    return loaded


#: The longest class name a checkpoint may carry (tools print and draw them).
MAX_CLASS_NAME = 256


def predicted_classes(model: nn.Module) -> int:
    """The most classes a head of ``model`` predicts (``num_classes``), else 0."""
    return max((m.num_classes for m in model.modules()
                if type(getattr(m, 'num_classes', None)) is int), default=0)


def check_dataset_meta(dataset_meta: object, source: str, num_classes: int = 0) -> None:
    """Refuse a checkpoint's ``meta.dataset_meta`` that is not what the toolboxes write.

    The inferencers and ``Runner.resume`` read it, mmdet's with its keys lower-cased:
    ``classes`` must be printable names (tools print them) of at most :data:`MAX_CLASS_NAME`
    characters, at least ``num_classes`` of them (:func:`predicted_classes`), ``palette`` (if
    given) one RGB triple of integers 0..255 per class; no two keys may differ only in case.

    Raises:
        CheckpointError: anything else; the message names the field.
    """
    if not isinstance(dataset_meta, Mapping):
        raise CheckpointError(f'{source}: its meta.dataset_meta is a '
                              f'{type(dataset_meta).__name__}, not a mapping')
    if not all(isinstance(k, str) for k in dataset_meta):
        raise CheckpointError(f'{source}: its meta.dataset_meta has keys that are not str')
    folded = {k.lower(): v for k, v in dataset_meta.items()}
    if len(folded) != len(dataset_meta):
        raise CheckpointError(f'{source}: its meta.dataset_meta has keys that differ only in '
                              f'case ({short_list(sorted(dataset_meta), 6)}), which mmdet '
                              f'reads as one')
    dataset_meta = folded
    classes = dataset_meta.get('classes')
    if classes is not None and (not isinstance(classes, (list, tuple)) or not classes or not all(
            isinstance(c, str) and 0 < len(c) <= MAX_CLASS_NAME and c.isprintable()
            for c in classes)):
        raise CheckpointError(f'{source}: its meta.dataset_meta.classes is not a list of '
                              f'class names (printable text of 1 to {MAX_CLASS_NAME} '
                              f'characters each)')
    if classes is not None and len(classes) < num_classes:
        raise CheckpointError(f'{source}: its meta.dataset_meta.classes has {len(classes)} '
                              f'name(s) where the model predicts {num_classes} classes')
    palette = dataset_meta.get('palette')
    if palette is not None and (
            not isinstance(palette, (list, tuple))
            or (classes is not None and len(palette) < len(classes))
            or not all(isinstance(c, (list, tuple)) and len(c) == 3
                       and all(type(v) is int and 0 <= v < 256 for v in c) for c in palette)):
        raise CheckpointError(f'{source}: its meta.dataset_meta.palette is not one RGB triple '
                              f'(integers 0..255) per class')
