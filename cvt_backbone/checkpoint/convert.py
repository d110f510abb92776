"""Key names of every published CvT checkpoint, and how they become this package's.

One table per foreign format, **official** (microsoft/CvT ``.pth`` files) and
**transformers** (``CvtModel`` / ``CvtForImageClassification``, the hub's ``microsoft/cvt-*``),
recognised from the keys, never from a file name. Also the one :func:`unwrap_state_dict` and
state-dict diff (:func:`diff_state_dict`) that every loader, the converter and the hooks use.
"""
from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import torch

from ..errors import CheckpointError

# --------------------------------------------------------------------------- tables
_QKV = {'query': 'q', 'key': 'k', 'value': 'v'}

#: official name -> ours, applied in order (each a regex and its replacement).
OFFICIAL_RULES: tuple[tuple[str, str], ...] = (
    (r'^stage(\d{1,3})\.', r'stages.\1.'),
    (r'\.patch_embed\.proj\.', '.patch_embed.projection.'),
    (r'\.attn\.conv_proj_([qkv])\.', r'.attn.conv_proj.\1.'),
    (r'^norm\.', 'cls_norm.'),
)
#: transformers name -> ours, applied in order. ``cvt.`` prefixes the classifier's encoder.
TRANSFORMERS_RULES: tuple[tuple[str, str], ...] = (
    (r'^(cvt\.)?encoder\.stages\.(\d{1,3})\.embedding\.convolution_embeddings\.projection\.',
     r'stages.\2.patch_embed.projection.'),
    (r'^(cvt\.)?encoder\.stages\.(\d{1,3})\.embedding\.convolution_embeddings\.normalization\.',
     r'stages.\2.patch_embed.norm.'),
    (r'^(cvt\.)?encoder\.stages\.(\d{1,3})\.cls_token$', r'stages.\2.cls_token'),
    (r'^(cvt\.)?encoder\.stages\.(\d{1,3})\.layers\.(\d{1,3})\.', r'stages.\2.blocks.\3.'),
    (r'\.attention\.attention\.convolution_projection_(query|key|value)\.'
     r'convolution_projection\.convolution\.', r'.attn.conv_proj.<\1>.conv.'),
    (r'\.attention\.attention\.convolution_projection_(query|key|value)\.'
     r'convolution_projection\.normalization\.', r'.attn.conv_proj.<\1>.bn.'),
    (r'\.attention\.attention\.projection_(query|key|value)\.', r'.attn.proj_<\1>.'),
    (r'\.attention\.output\.dense\.', '.attn.proj.'),
    (r'\.intermediate\.dense\.', '.mlp.fc1.'),
    (r'\.output\.dense\.', '.mlp.fc2.'),
    (r'\.layernorm_before\.', '.norm1.'),
    (r'\.layernorm_after\.', '.norm2.'),
    (r'^layernorm\.', 'cls_norm.'),
    (r'^classifier\.', 'head.'),
)
_COMPILED = {name: tuple((re.compile(p), r) for p, r in rules)
             for name, rules in (('official', OFFICIAL_RULES),
                                 ('transformers', TRANSFORMERS_RULES))}
_QKV_MARK = re.compile(r'<(query|key|value)>')

#: Every key this package's CvT (with a classifier ``head``) can have.
CVT_KEY = re.compile(
    r'^(stages\.\d{1,3}\.(patch_embed\.(projection|norm)\.(weight|bias)|cls_token'
    r'|blocks\.\d{1,3}\.(norm[12]\.(weight|bias)'
    r'|attn\.conv_proj\.[qkv]\.(conv\.weight|bn\.(weight|bias|running_mean|running_var'
    r'|num_batches_tracked))'
    r'|attn\.proj(_[qkv])?\.(weight|bias)|mlp\.fc[12]\.(weight|bias)))'
    r'|(norm\d{1,3}|cls_norm|head)\.(weight|bias))$')

#: How each format's first stage embedding is named: the key that identifies the format.
_SIGNATURES = {
    'cvt': 'stages.0.patch_embed.projection.weight',
    'official': 'stage0.patch_embed.proj.weight',
    'transformers': 'encoder.stages.0.embedding.convolution_embeddings.projection.weight',
}
FOREIGN_FORMATS = ('official', 'transformers')


def detect_format(keys: Iterable[str]) -> str | None:
    """Name the CvT key format of a state dict: ``'cvt'``, ``'official'``, ``'transformers'``.

    Returns:
        The format, or None when the keys are none of them.
    """
    keys = set(keys)
    for name, signature in _SIGNATURES.items():
        if signature in keys or (name == 'transformers' and f'cvt.{signature}' in keys):
            return name
    return None


def _rename(key: str, fmt: str) -> str:
    for pattern, replacement in _COMPILED[fmt]:
        key = pattern.sub(replacement, key)
    return _QKV_MARK.sub(lambda m: _QKV[m[1]], key)


def convert_keys(state_dict: Mapping[str, torch.Tensor], fmt: str) -> OrderedDict:
    """Rename a foreign CvT state dict to this package's key names (tensors are not copied).

    Args:
        state_dict: An official or transformers CvT state dict.
        fmt: ``'official'`` or ``'transformers'`` (see :func:`detect_format`).

    Returns:
        The renamed state dict, in the original order. The classifier is ``head.*``.

    Raises:
        CheckpointError: a key is not one a CvT checkpoint of that format has.
    """
    converted = OrderedDict((_rename(key, fmt), value) for key, value in state_dict.items())
    unknown = [old for old, new in zip(state_dict, converted) if not CVT_KEY.match(new)]
    if unknown:
        raise CheckpointError(f'Not a CvT state dict of the {fmt} format: unexpected keys '
                              f'{short_list(unknown)}')
    return converted


def convert_official_cvt(state_dict: Mapping[str, torch.Tensor]) -> OrderedDict:
    """Rename an official CvT state dict (microsoft/CvT) to this package's key names."""
    return convert_keys(state_dict, 'official')


def to_cvt_keys(state_dict: Mapping[str, torch.Tensor]) -> tuple[OrderedDict, str | None]:
    """This package's key names for a CvT state dict of any format.

    Returns:
        The state dict (renamed if foreign) and its original format (None if unknown).
    """
    fmt = detect_format(state_dict)
    if fmt in FOREIGN_FORMATS:
        return convert_keys(state_dict, fmt), fmt
    return OrderedDict(state_dict), fmt


def to_transformers_state_dict(state_dict: Mapping[str, torch.Tensor],
                               transformers_keys: Iterable[str]) -> OrderedDict:
    """Fill a transformers CvT's state dict from this package's weights, by the same table.

    Args:
        state_dict: This package's CvT weights (``head.*`` for a classifier).
        transformers_keys: The keys of the target ``CvtModel`` / ``CvtForImageClassification``.

    Raises:
        CheckpointError: a target key has no counterpart in ``state_dict``.
    """
    renamed = {key: _rename(key, 'transformers') for key in transformers_keys}
    missing = [key for key, ours in renamed.items() if ours not in state_dict]
    if missing:
        raise CheckpointError(f'The CvT weights have no counterpart for the transformers keys '
                              f'{short_list(missing)}')
    return OrderedDict((key, state_dict[ours]) for key, ours in renamed.items())


# --------------------------------------------------------------------------- arch
ARCH_KEYS = ('embed_dims', 'depths', 'num_heads', 'patch_sizes', 'patch_strides',
             'patch_paddings', 'cls_token')
_TRANSFORMERS_ARCH = dict(embed_dims='embed_dim', depths='depth', num_heads='num_heads',
                          patch_sizes='patch_sizes', patch_strides='patch_stride',
                          patch_paddings='patch_padding', cls_token='cls_token')


#: Bounds of a stated arch field: wider than any CvT, small enough to refuse absurd sizes.
_ARCH_LIMITS = dict(embed_dims=(1, 16384), depths=(1, 1024), num_heads=(1, 1024),
                    patch_sizes=(1, 64), patch_strides=(1, 64), patch_paddings=(0, 64))


def arch_from_transformers_config(config: Mapping, source: str = 'config.json') -> dict:
    """The arch fields a transformers ``CvtConfig`` (``config.json``) states, checked.

    Each stated field must list one value per stage (as many as ``embed_dim``): integers
    within the bounds of :data:`_ARCH_LIMITS`, booleans for ``cls_token``, and widths that
    the head counts divide. Fields the config does not state are left out.

    Raises:
        CheckpointError: a field of another type, length or range; the message names it.
    """
    arch = {}
    for ours, theirs in _TRANSFORMERS_ARCH.items():
        if theirs not in config:
            continue
        values = config[theirs]
        if not isinstance(values, (list, tuple)) or not values:
            raise CheckpointError(f'{source}: {theirs} must list one value per stage, got '
                                  f'{type(values).__name__}')
        low, high = _ARCH_LIMITS.get(ours, (0, 1))
        kind = bool if ours == 'cls_token' else int
        if not all(type(v) is kind and low <= v <= high for v in values):
            what = 'true or false' if kind is bool else f'integers from {low} to {high}'
            raise CheckpointError(f'{source}: {theirs} must be {what}, got '
                                  f'{short_list([repr(v)[:20] for v in values], 4)}')
        arch[ours] = list(values)
    lengths = {key: len(values) for key, values in arch.items()}
    if len(set(lengths.values())) > 1:
        raise CheckpointError(f'{source}: its per-stage fields have different lengths '
                              f'{lengths}')
    for i, (dims, heads) in enumerate(zip(arch.get('embed_dims', []),
                                          arch.get('num_heads', []))):
        if dims % heads:
            raise CheckpointError(f'{source}: stage {i} has embed_dim {dims}, which '
                                  f'num_heads {heads} does not divide')
    return arch


def arch_from_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict:
    """The arch fields a state dict with this package's key names shows by its shapes.

    Heads, strides and paddings are not visible in the weights. Every block a depth counts
    has its stage's width, so a model built to this arch is no larger than the weights.

    Raises:
        CheckpointError: a stage's blocks are not numbered 0, 1, ..., or a block lacks its
            attention output or MLP weights or has them in another width than its stage.
    """
    dims, kernels, blocks, tokens = {}, {}, {}, set()
    for key, value in state_dict.items():
        if match := re.match(r'^stages\.(\d{1,3})\.patch_embed\.projection\.weight$', key):
            if value.dim() != 4 or value.shape[-1] != value.shape[-2]:
                raise CheckpointError(f'{key} of the weights has shape {tuple(value.shape)}, '
                                      f'not that of a square convolution (out, in, k, k)')
            dims[int(match[1])], kernels[int(match[1])] = value.shape[0], value.shape[-1]
        elif match := re.match(r'^stages\.(\d{1,3})\.blocks\.(\d{1,3})\.', key):
            blocks.setdefault(int(match[1]), set()).add(int(match[2]))
        elif match := re.match(r'^stages\.(\d{1,3})\.cls_token$', key):
            tokens.add(int(match[1]))
    stages = sorted(dims)
    for stage in stages:
        numbers = blocks.get(stage, set())
        if numbers != set(range(len(numbers))):
            raise CheckpointError(f'Stage {stage} of the weights has blocks '
                                  f'{short_list([str(n) for n in sorted(numbers)], 6)}, not '
                                  f'0 to {len(numbers) - 1}')
        for block in sorted(numbers):
            _check_block_widths(state_dict, f'stages.{stage}.blocks.{block}.', dims[stage])
    return dict(embed_dims=[dims[i] for i in stages],
                depths=[len(blocks.get(i, ())) for i in stages],
                patch_sizes=[kernels[i] for i in stages],
                cls_token=[i in tokens for i in stages])


def _check_block_widths(state_dict: Mapping[str, torch.Tensor], prefix: str,
                        width: int) -> None:
    """Refuse a block whose attention output ``(C, C)`` or MLP ``(H, C)``, ``(C, H)`` weights
    are missing or not of its stage's width ``C``."""
    proj, fc1, fc2 = (state_dict.get(prefix + name) for name in
                      ('attn.proj.weight', 'mlp.fc1.weight', 'mlp.fc2.weight'))
    hidden = fc1.shape[0] if fc1 is not None and fc1.dim() == 2 else 0
    if (proj is None or tuple(proj.shape) != (width, width) or not hidden
            or tuple(fc1.shape) != (hidden, width) or fc2 is None
            or tuple(fc2.shape) != (width, hidden)):
        shapes = ', '.join(f'{name} {"missing" if t is None else tuple(t.shape)}' for name, t in
                           (('attn.proj.weight', proj), ('mlp.fc1.weight', fc1),
                            ('mlp.fc2.weight', fc2)))
        raise CheckpointError(f'Block {prefix[:-1]} of the weights is not one of its stage '
                              f'(width {width}): {shapes}')


def check_declared_arch(declared: Mapping, found: Mapping, source: str) -> None:
    """Refuse a stated arch (``config.json``) that the weights contradict, before anything
    of that arch is built.

    Raises:
        CheckpointError: a width, depth, kernel size or class token differs; all are named.
    """
    differences = [f'{key} {list(declared[key])} stated vs {list(found[key])} in the weights'
                   for key in ARCH_KEYS if key in declared and key in found
                   and list(declared[key]) != list(found[key])]
    if differences:
        raise CheckpointError(f'{source} states another arch than its weights have: '
                              + '; '.join(differences))


def arch_differences(model_arch: Mapping, checkpoint_arch: Mapping) -> list[str]:
    """The arch fields in which a checkpoint differs from a model: ``'field: a vs b'``."""
    return [f'{key} {list(checkpoint_arch[key])} in the checkpoint vs {list(model_arch[key])} '
            f'in the model' for key in ARCH_KEYS
            if key in checkpoint_arch and key in model_arch
            and list(checkpoint_arch[key]) != list(model_arch[key])]


# --------------------------------------------------------------------------- state dicts
def short_list(items: list[str], limit: int = 8) -> str:
    """``a, b, c ... (N in all)``: a list of keys short enough for one error line."""
    return ', '.join(items[:limit]) + (f' ... ({len(items)} in all)' if len(items) > limit
                                       else '')


#: Where the package's loaders look for the state dict (MMEngine, timm, DeepSpeed style).
ANY_WRAPPER = ('state_dict', 'model', 'module')
#: Where MMEngine's loaders look: ``'state_dict'``, else they load the whole mapping.
MMENGINE_WRAPPER = ('state_dict',)


def unwrap_state_dict(checkpoint: object, source: str,
                      wrappers: tuple[str, ...] = ANY_WRAPPER) -> OrderedDict:
    """The state dict inside a checkpoint.

    Accepts a plain state dict, or one under the first of ``wrappers`` the checkpoint has; a
    ``module.`` prefix on every key (a saved ``DistributedDataParallel``) is removed.
    PyTorch's per-module ``_metadata`` is kept.

    Args:
        checkpoint: What the checkpoint file held.
        source: Names the checkpoint in errors.
        wrappers: The keys that may hold the state dict: :data:`ANY_WRAPPER` for the
            package's own loaders, :data:`MMENGINE_WRAPPER` for what MMEngine's will load.

    Raises:
        CheckpointError: there is no non-empty state dict of tensors under str keys.
    """
    if isinstance(checkpoint, Mapping):
        for wrapper in wrappers:
            if isinstance(checkpoint.get(wrapper), Mapping):
                checkpoint = checkpoint[wrapper]
                break
    if (not isinstance(checkpoint, Mapping) or not checkpoint
            or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                       for k, v in checkpoint.items())):
        where = ' or '.join(repr(w) for w in wrappers)
        raise CheckpointError(f'{source} does not hold a state dict of tensors under str keys, '
                              f'neither under {where} nor as a whole (got '
                              f'{type(checkpoint).__name__}'
                              + (f' with keys {short_list([repr(k)[:40] for k in checkpoint])}'
                                 if isinstance(checkpoint, Mapping) else '') + ')')
    metadata = getattr(checkpoint, '_metadata', None)
    if all(k.startswith('module.') for k in checkpoint):
        checkpoint = OrderedDict((k[len('module.'):], v) for k, v in checkpoint.items())
    state_dict = OrderedDict(checkpoint)
    if metadata is not None:
        state_dict._metadata = metadata
    return state_dict


@dataclass
class StateDictDiff:
    """How a state dict differs from what a model expects.

    Attributes:
        missing: Keys the model has and the state dict lacks.
        unexpected: Keys the state dict has and the model lacks.
        mismatched: ``'key: checkpoint (shape) vs model (shape)'`` for keys in both.
    """

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.mismatched)

    def describe(self) -> str:
        """One line: ``shape mismatch for ...; missing keys ...; unexpected keys ...``."""
        parts = []
        if self.mismatched:
            parts.append(f'shape mismatch for {short_list(self.mismatched, 6)}')
        if self.missing:
            parts.append(f'missing keys {short_list(self.missing)}')
        if self.unexpected:
            parts.append(f'unexpected keys {short_list(self.unexpected)}')
        return '; '.join(parts)


def diff_state_dict(expected: Mapping[str, torch.Tensor], given: Mapping[str, torch.Tensor]
                    ) -> StateDictDiff:
    """Compare a state dict with a model's ``state_dict()`` (keys and shapes)."""
    return StateDictDiff(
        missing=[k for k in expected if k not in given],
        unexpected=[k for k in given if k not in expected],
        mismatched=[f'{k}: checkpoint {tuple(given[k].shape)} vs model '
                    f'{tuple(expected[k].shape)}' for k in expected
                    if k in given and given[k].shape != expected[k].shape])


# --------------------------------------------------------------------------- whole models
#: Where an mmpretrain ``ImageClassifier`` keeps the backbone's and the linear head's weights.
BACKBONE_PREFIX, CLASSIFIER_PREFIX = 'backbone.', 'head.fc.'


def to_classifier_keys(state_dict: Mapping[str, torch.Tensor]) -> OrderedDict:
    """This package's CvT keys (classifier ``head.*``) as an mmpretrain ``ImageClassifier``'s:
    ``backbone.*`` and ``head.fc.*``."""
    return OrderedDict(
        (CLASSIFIER_PREFIX + k[len('head.'):] if k.startswith('head.') else BACKBONE_PREFIX + k,
         v) for k, v in state_dict.items())


def from_classifier_keys(state_dict: Mapping[str, torch.Tensor]) -> OrderedDict:
    """The inverse of :func:`to_classifier_keys`: the CvT keys (classifier ``head.*``) of a
    whole model's state dict; keys of other parts (necks, other heads) are left out."""
    return OrderedDict(
        (k[len(BACKBONE_PREFIX):] if k.startswith(BACKBONE_PREFIX)
         else 'head.' + k[len(CLASSIFIER_PREFIX):], v)
        for k, v in state_dict.items() if k.startswith((BACKBONE_PREFIX, CLASSIFIER_PREFIX)))


def canonical_checkpoint(checkpoint: object, source: str) -> object:
    """Give a foreign CvT checkpoint the layout of an mmpretrain classifier checkpoint.

    An official or transformers checkpoint becomes ``{'state_dict': backbone.* and
    head.fc.* weights, 'meta': {'cvt_format': ..., 'arch': ...}}``, which MMEngine's
    loaders put into a classifier (strictly), a detector or a segmentor (``backbone.*``), or
    a bare CvT (whose load hook takes the ``backbone.`` keys). The arch its weights show is
    checked against the one its ``config.json`` states, if any. Anything else is returned
    unchanged.

    Raises:
        CheckpointError: the weights are not those of a CvT of one arch, or contradict the
            checkpoint's ``config.json``.
    """
    if not isinstance(checkpoint, Mapping):
        return checkpoint
    try:
        state_dict = unwrap_state_dict(checkpoint, source)
    except CheckpointError:
        return checkpoint
    fmt = detect_format(state_dict)
    if fmt not in FOREIGN_FORMATS:
        return checkpoint
    converted = convert_keys(state_dict, fmt)
    try:
        arch = arch_from_state_dict(converted)
    except CheckpointError as err:
        raise CheckpointError(f'{source}: {err}') from None
    meta = dict(checkpoint.get('meta', {})) if isinstance(checkpoint.get('meta'), Mapping) \
        else {}
    if isinstance(meta.get('transformers_config'), Mapping):
        declared = arch_from_transformers_config(meta['transformers_config'],
                                                 f'{source} (config.json)')
        check_declared_arch(declared, arch, source)
        arch.update(declared)
    meta.update(cvt_format=fmt, arch=arch)
    return {'state_dict': to_classifier_keys(converted), 'meta': meta}
