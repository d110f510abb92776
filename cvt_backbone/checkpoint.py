"""Safe checkpoint loading and the official-CvT key converter.

Every checkpoint is read with ``torch.load(weights_only=True)``: unpickling can only rebuild
tensors, containers and the few extra globals on :data:`SAFE_GLOBALS`, exactly those that
MMEngine's own checkpoints hold (its ``message_hub`` keeps ``HistoryBuffer`` objects, which
pickle four of their own methods, and numpy arrays and scalars). A checkpoint that needs
anything else is refused with an error that names the file and the global; code hidden in a
pickle never runs.

Importing this module registers :func:`load_checkpoint_file` as MMEngine's loader for local
files, so ``init_cfg=dict(type='Pretrained', ...)``, ``load_from``, ``--resume`` and
``mmengine.runner.load_checkpoint`` all go through it, and makes MMEngine's URL loaders
(``http(s)://``, ``torchvision://``, ``mmcls://``, ``open-mmlab://``) read their downloads the
same way (:func:`load_url_safely`).
"""
from __future__ import annotations

import os
import pickle
import re
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Mapping

import mmengine.runner.checkpoint as mmengine_checkpoint
import numpy as np
import torch
import torch.nn as nn
from mmengine.logging import HistoryBuffer, print_log
from mmengine.runner import CheckpointLoader


class CheckpointError(ValueError):
    """A checkpoint that cannot be read safely, or whose weights do not fit the model."""


#: The methods MMEngine's ``HistoryBuffer`` pickles with itself (``_statistics_methods``).
_HISTORY_BUFFER_STATISTICS = ('min', 'max', 'current', 'mean')


def _history_buffer_statistic(owner: object, name: str) -> Callable:
    """The one ``getattr`` a checkpoint may call: ``getattr(HistoryBuffer, statistic)``.

    ``HistoryBuffer.__getstate__`` stores its ``min``, ``max``, ``current`` and ``mean``
    methods, and pickle protocol 2 (``torch.save``'s) writes a method as
    ``getattr(HistoryBuffer, 'min')``. Allowing the real ``getattr`` would let a pickle reach
    any attribute of any allowed object; this stand-in answers only those four lookups.

    Raises:
        pickle.UnpicklingError: any other lookup.
    """
    if owner is HistoryBuffer and name in _HISTORY_BUFFER_STATISTICS:
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(f'Unsupported global: getattr({owner!r}, {name!r}) is not '
                                 f'allowed (only HistoryBuffer.{_HISTORY_BUFFER_STATISTICS})')


def _numpy_globals() -> list:
    """The numpy objects that MMEngine's ``message_hub`` pickles.

    ``HistoryBuffer`` keeps float64 logs and int64 counts as arrays; ``runtime_info`` holds
    numpy scalars (``eta`` is a float64, mmseg's ``best_score`` a float32). An array needs
    ``_reconstruct``, ``ndarray`` and ``dtype`` plus the class of its dtype (the dtype's state
    is restored on an instance of that class); a scalar needs ``scalar``. numpy 1 pickled the
    two functions from ``numpy.core.multiarray``, numpy 2 from ``numpy._core.multiarray``: both
    names are accepted, so checkpoints written under either load.
    """
    multiarray = np._core.multiarray if hasattr(np, '_core') else np.core.multiarray
    functions = [(multiarray._reconstruct, f'{package}.multiarray._reconstruct')
                 for package in ('numpy.core', 'numpy._core')]
    functions += [(multiarray.scalar, f'{package}.multiarray.scalar')
                  for package in ('numpy.core', 'numpy._core')]
    dtype_classes = [type(np.dtype(t)) for t in (np.float64, np.float32, np.int64)]
    return [*functions, np.ndarray, np.dtype, *dtype_classes]


#: Globals (beyond tensors and plain containers) that a checkpoint may reference: exactly
#: what the checkpoints of MMEngine's Runner hold (official CvT checkpoints need none).
SAFE_GLOBALS: list = [HistoryBuffer, (_history_buffer_statistic, 'builtins.getattr'),
                      *_numpy_globals()]


def check_checkpoint_path(path: str | os.PathLike) -> str:
    """Check that ``path`` is a non-empty local file, before anything is built around it.

    Args:
        path: A local checkpoint path (``~`` is expanded).

    Returns:
        The expanded path.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointError: ``path`` is a directory or an empty file.
    """
    path = os.path.expanduser(os.fspath(path))
    if not os.path.exists(path):
        raise FileNotFoundError(f'Checkpoint file {path!r} does not exist')
    if os.path.isdir(path):
        raise CheckpointError(f'Checkpoint path {path!r} is a directory, not a checkpoint file')
    if os.path.getsize(path) == 0:
        raise CheckpointError(f'Checkpoint file {path!r} is empty (0 bytes)')
    return path


def _load_safely(load: Callable[[], object], source: str) -> object:
    """Run ``load`` (a ``torch.load`` with ``weights_only=True``) under :data:`SAFE_GLOBALS`.

    Args:
        load: Reads the checkpoint.
        source: Names the checkpoint in errors.

    Raises:
        CheckpointError: the pickle needs a global off the allow-list, or the file is truncated
            or corrupt.
    """
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            return load()
    except pickle.UnpicklingError as err:
        # torch re-raises the unpickler's error with a long preamble; the original is the
        # context and its first sentence names the offending global.
        inner = err.__context__ if isinstance(err.__context__, pickle.UnpicklingError) else err
        detail = str(inner).strip().split('. ')[0].splitlines()[0] if str(inner).strip() else ''
        raise CheckpointError(
            f'Refused to load checkpoint {source}: its pickle needs a Python object that is not '
            f'on the allow-list of plain weights and MMEngine training state, so loading it '
            f'could run code ({detail})') from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f'Could not read checkpoint {source}: the file is truncated or '
                              f'corrupt ({first_line})') from None


def load_checkpoint_file(path: str | os.PathLike, map_location: str | torch.device = 'cpu'
                         ) -> object:
    """Read a checkpoint without executing code from it.

    Args:
        path: A local ``.pth`` file.
        map_location: Where to put the tensors.

    Returns:
        The unpickled object (usually a dict).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointError: ``path`` is a directory or empty, the file is truncated or corrupt,
            or its pickle references a global that is not on :data:`SAFE_GLOBALS`.
    """
    path = check_checkpoint_path(path)
    with open(path, 'rb') as f:
        head = f.read(2)
    # torch.save writes a zip archive (b'PK'), or in the legacy format a pickle (PROTO, 0x80).
    if head != b'PK' and head[:1] != b'\x80':
        raise CheckpointError(f'Could not read checkpoint {path!r}: the file is truncated or '
                              f'corrupt (neither a torch.save zip archive nor a pickle)')
    return _load_safely(lambda: torch.load(path, map_location=map_location, weights_only=True),
                        repr(path))


def load_url_safely(url: str, model_dir: str | None = None, map_location=None,
                    progress: bool = True, **kwargs) -> object:
    """Download a checkpoint into the torch hub cache and read it without executing code.

    A drop-in for the ``load_url`` of ``mmengine.runner.checkpoint``, which reads downloads
    with ``weights_only=False``; it serves ``http(s)://``, ``torchvision://``, ``mmcls://``
    and ``open-mmlab://`` checkpoints.

    Args:
        url: The checkpoint's URL.
        model_dir: Cache folder (default: ``<torch hub dir>/checkpoints``).
        map_location: Where to put the tensors.
        progress: Show a download progress bar.
        **kwargs: Further arguments of ``torch.hub.load_state_dict_from_url``
            (``weights_only`` is always True).

    Raises:
        CheckpointError: see :func:`load_checkpoint_file`.
    """
    kwargs['weights_only'] = True
    return _load_safely(lambda: torch.hub.load_state_dict_from_url(
        url, model_dir=model_dir, map_location=map_location, progress=progress, **kwargs),
        repr(url))


@CheckpointLoader.register_scheme(prefixes='', force=True)
def _load_local_checkpoint(filename: str, map_location=None) -> object:
    """MMEngine's loader for local paths, replaced by the safe one."""
    return load_checkpoint_file(filename, map_location if map_location is not None else 'cpu')


# MMEngine's http(s), torchvision://, mmcls:// and open-mmlab:// loaders all download through
# this module-level name; they look it up at call time.
mmengine_checkpoint.load_url = load_url_safely

# ---------------------------------------------------------------------- official key names
_OFFICIAL_RULES = (
    (re.compile(r'^stage(\d+)\.'), r'stages.\1.'),
    (re.compile(r'\.patch_embed\.proj\.'), '.patch_embed.projection.'),
    (re.compile(r'\.attn\.conv_proj_([qkv])\.'), r'.attn.conv_proj.\1.'),
    (re.compile(r'^norm\.'), 'cls_norm.'),
)
_OFFICIAL_KEY = re.compile(r'^(stage\d+\.(patch_embed|blocks|cls_token)|norm\.|head\.)')


def is_official_cvt(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """Whether ``state_dict`` uses the official CvT key names (``stage0.patch_embed...``)."""
    return any(k.startswith('stage0.patch_embed.') for k in state_dict)


def convert_official_cvt(state_dict: Mapping[str, torch.Tensor]) -> OrderedDict:
    """Rename the keys of an official CvT checkpoint to this package's :class:`CvT`.

    ``stage{i}.`` becomes ``stages.{i}.``, ``patch_embed.proj`` becomes
    ``patch_embed.projection``, ``attn.conv_proj_{q,k,v}`` becomes ``attn.conv_proj.{q,k,v}``
    and the final LayerNorm ``norm`` (applied to the class token) becomes ``cls_norm``. The
    classifier ``head.weight`` / ``head.bias`` keep their names. Tensors are not copied.

    Args:
        state_dict: An official checkpoint's state dict.

    Returns:
        The renamed state dict, in the original order.

    Raises:
        CheckpointError: a key is not one an official CvT checkpoint has.
    """
    unknown = [k for k in state_dict if not _OFFICIAL_KEY.match(k)]
    if unknown:
        raise CheckpointError(f'Not an official CvT state dict: unexpected keys {unknown[:8]}'
                              f'{" ..." if len(unknown) > 8 else ""}')
    converted = OrderedDict()
    for key, value in state_dict.items():
        for pattern, replacement in _OFFICIAL_RULES:
            key = pattern.sub(replacement, key)
        converted[key] = value
    return converted


# ---------------------------------------------------------------------- loading into CvT
def _extract_state_dict(checkpoint: object, source: str) -> Mapping[str, torch.Tensor]:
    if isinstance(checkpoint, Mapping):
        for wrapper in ('state_dict', 'model', 'module'):
            if isinstance(checkpoint.get(wrapper), Mapping):
                checkpoint = checkpoint[wrapper]
                break
    if (not isinstance(checkpoint, Mapping) or not checkpoint
            or not all(isinstance(v, torch.Tensor) for v in checkpoint.values())):
        raise CheckpointError(f'{source} does not hold a state dict of tensors '
                              f'(got {type(checkpoint).__name__})')
    return checkpoint


def _strip_prefix(state_dict: Mapping[str, torch.Tensor], prefix: str
                  ) -> tuple[OrderedDict, list[str]]:
    kept = OrderedDict((k[len(prefix):], v) for k, v in state_dict.items() if k.startswith(prefix))
    return kept, [k for k in state_dict if not k.startswith(prefix)]


def _short(keys: list[str], limit: int = 8) -> str:
    return ', '.join(keys[:limit]) + (f' ... ({len(keys)} in all)' if len(keys) > limit else '')


def fit_cvt_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor],
                       source: str = 'the checkpoint', prefix: str | None = None) -> OrderedDict:
    """Turn any CvT checkpoint's state dict into exactly what ``model`` can load.

    Accepts the official key names (converted), this package's names, and whole-model
    checkpoints (mmpretrain / mmdet / mmseg) whose backbone sits under ``prefix``
    (default ``'backbone.'`` when such keys are present).

    Keys that belong to a different output path are set aside with a log line: the official
    classifier ``head``, the class-token norm ``cls_norm`` for a feature-map backbone, and the
    per-stage output norms ``norm{i}`` for a class-token backbone. Output norms (or
    ``cls_norm``) that the checkpoint lacks keep their initialisation, also with a log line.

    Raises:
        CheckpointError: any other key is missing or unexpected, or a shape differs; the
            message lists the keys and shapes.
    """
    if is_official_cvt(state_dict):
        state_dict, ignored = convert_official_cvt(state_dict), []
    else:
        if prefix is None and any(k.startswith('backbone.') for k in state_dict):
            prefix = 'backbone.'
        state_dict, ignored = (_strip_prefix(state_dict, prefix) if prefix
                               else (OrderedDict(state_dict), []))
        if not state_dict:
            raise CheckpointError(f'{source} has no keys under the prefix {prefix!r}')
    ignored += [k for k in state_dict if k.startswith('head.')]

    expected = model.state_dict()
    output_norm = re.compile(r'^(norm\d+|cls_norm)\.')
    unexpected = [k for k in state_dict if k not in expected and k not in ignored]
    ignored += [k for k in unexpected if output_norm.match(k)]
    unexpected = [k for k in unexpected if not output_norm.match(k)]
    missing = [k for k in expected if k not in state_dict]
    fresh = [k for k in missing if output_norm.match(k)]
    missing = [k for k in missing if not output_norm.match(k)]
    mismatched = [f'{k}: checkpoint {tuple(state_dict[k].shape)} vs model '
                  f'{tuple(expected[k].shape)}' for k in expected
                  if k in state_dict and state_dict[k].shape != expected[k].shape]
    problems = []
    if mismatched:
        problems.append(f'shape mismatch for {_short(mismatched, 6)}')
    if missing:
        problems.append(f'missing keys {_short(missing)}')
    if unexpected:
        problems.append(f'unexpected keys {_short(unexpected)}')
    if problems:
        arch = getattr(model, 'arch', None)
        hint = f' (model arch: embed_dims {arch["embed_dims"]}, depths {arch["depths"]})' \
            if isinstance(arch, dict) else ''
        raise CheckpointError(f'{source} does not fit this CvT{hint}: ' + '; '.join(problems))
    if ignored:
        print_log(f'Loading {source}: not used by this backbone: {_short(ignored)}',
                  logger='current')
    if fresh:
        print_log(f'Loading {source}: keep their initialisation (not in the checkpoint): '
                  f'{_short(fresh)}', logger='current')
    return OrderedDict((k, v) for k, v in state_dict.items() if k in expected)


def load_cvt_weights(model: nn.Module, path: str | os.PathLike, prefix: str | None = None
                     ) -> None:
    """Load a checkpoint file into a :class:`CvT` safely and completely.

    Args:
        model: The backbone.
        path: Official, mmpretrain, mmdet, mmseg or this package's checkpoint.
        prefix: Key prefix of the backbone in a whole-model checkpoint.

    Raises:
        CheckpointError: see :func:`load_checkpoint_file` and :func:`fit_cvt_state_dict`.
    """
    source = f'checkpoint {os.fspath(path)!r}'
    state_dict = _extract_state_dict(load_checkpoint_file(path), source)
    model.load_state_dict(fit_cvt_state_dict(model, state_dict, source, prefix), strict=False)
    print_log(f'Loaded CvT weights from {os.fspath(path)}', logger='current')
