"""A config's model, and a checkpoint in it, for any of the three toolboxes.

:func:`build_model`, :func:`load_checkpoint` and both at once, :func:`init_model` (as mmdet's
``init_detector`` or mmseg's ``init_model``), with :func:`load_config` and
:func:`check_toolbox`. The tools build every model they measure, export or test through these.
"""
from __future__ import annotations

import importlib
import importlib.util
import os.path as osp
import re
from collections.abc import Mapping

import mmcv
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.registry import MODELS, DefaultScope

from .checkpoint import (
    canonical_checkpoint,
    check_checkpoint_fits,
    read_checkpoint,
    unwrap_state_dict,
)
from .checkpoint.loading import check_dataset_meta, predicted_classes
from .errors import ConfigError, SetupError, error_line
from .version import SUPPORTED, installed_version, supported_range, version_problem, warn_once

#: The extra of cvt-backbone that brings each toolbox.
EXTRAS = {'mmpretrain': 'cls', 'mmdet': 'det', 'mmseg': 'seg'}
#: The toolboxes whose models need mmcv's compiled ops (RoIAlign, NMS and co.).
NEED_OPS = ('mmdet', 'mmseg')


def check_toolbox(name: str) -> None:
    """Check a toolbox before it is used: importable, in its tested range, and (mmdet,
    mmsegmentation) with mmcv's compiled ops.

    Args:
        name: ``'mmpretrain'``, ``'mmdet'`` or ``'mmseg'``.

    Raises:
        SetupError: it is not installed or does not import, or mmcv's compiled ops do not
            load where it needs them (an ``ImportError``); the message names the version and
            the extra to install.
    """
    package, extra = SUPPORTED[name][0], EXTRAS[name]
    try:
        importlib.import_module(f'{name}.registry')
    except (ImportError, AssertionError) as err:  # they assert their mmcv and mmengine ranges
        version = installed_version(name) if importlib.util.find_spec(name) else None
        found = f'{package} {version} does not import ({" ".join(str(err).split())})' \
            if version else f'{package} is not installed'
        raise SetupError(f'{found}: install {package}{supported_range(name)} '
                          f'(pip install cvt-backbone[{extra}])') from None
    problem = version_problem(name)
    if problem:
        warn_once(problem)
    if name in NEED_OPS:
        _check_mmcv_ops(name)


def _check_mmcv_ops(needed_by: str) -> None:
    problem = version_problem('mmcv')
    if problem:
        warn_once(problem)
    try:
        importlib.import_module('mmcv._ext')
    except ImportError as err:
        detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise SetupError(
            f'mmcv {getattr(mmcv, "__version__", "(unknown version)")} has no compiled ops '
            f'that load with torch {torch.__version__} ({detail}); {SUPPORTED[needed_by][0]} '
            f'needs them: install mmcv{supported_range("mmcv")} built for this torch '
            f'(prebuilt wheels for torch 2.1, or tools/setup_env.sh, which builds them)'
        ) from None


#: Default ``(H, W)`` input per toolbox, as their get_flops tools assume.
DEFAULT_SHAPES = {'mmpretrain': (224, 224), 'mmdet': (800, 1344), 'mmseg': (512, 512)}
_PACKAGE_BASE = re.compile(r'''['"](\w+)::''')
_LOCAL_BASE = re.compile(r'''['"]([^'"]+\.py)['"]''')


def _missing_toolboxes(path: str, seen: set[str] | None = None) -> set[str]:
    """The ``package::`` bases of a config file and of the local files it inherits from
    whose package is not installed."""
    seen = seen if seen is not None else set()
    path = osp.abspath(path)
    if path in seen or not osp.isfile(path):
        return set()
    seen.add(path)
    with open(path, encoding='utf-8') as f:
        text = f.read()
    missing = {name for name in _PACKAGE_BASE.findall(text)
               if importlib.util.find_spec(name) is None}
    for base in _LOCAL_BASE.findall(text):
        missing |= _missing_toolboxes(osp.join(osp.dirname(path), base), seen)
    return missing


def load_config(path: str, options: Mapping | None = None) -> Config:
    """Read a config file and apply ``options`` (``--cfg-options``).

    Raises:
        ConfigError: the file does not exist, inherits from a toolbox that is not installed
            (the message names the pip extra), or cannot be read; one line each.
    """
    if not osp.isfile(path):
        raise ConfigError(f'config file {path!r} does not exist')
    try:
        cfg = Config.fromfile(path)
    except Exception as err:  # noqa: BLE001 -- MMEngine raises many kinds; one line here
        missing = _missing_toolboxes(path)
        if missing:
            needs = ', '.join(f'{SUPPORTED[n][0] if n in SUPPORTED else n} (pip install '
                              f'cvt-backbone[{EXTRAS.get(n, "all")}])' for n in sorted(missing))
            raise ConfigError(f'{path} inherits from {", ".join(sorted(missing))}, which is '
                              f'not installed: {needs}') from None
        raise ConfigError(f'{path} cannot be read: {error_line(err)}') from None
    if options:
        cfg.merge_from_dict(dict(options))
    return cfg


def config_scope(cfg: Config, path: str = 'the config') -> str:
    """The toolbox of a config (its ``default_scope``), checked (:func:`check_toolbox`).

    Raises:
        ConfigError: ``default_scope`` is not one of the three toolboxes.
        ImportError: the toolbox is not installed or not usable.
    """
    scope = cfg.get('default_scope')
    if scope not in EXTRAS:
        raise ConfigError(f'{path}: default_scope is {scope!r}; expected one of '
                          f'{sorted(EXTRAS)} (set it, or inherit a toolbox runtime config)')
    check_toolbox(scope)
    return scope


def build_model(cfg: Config | str) -> tuple[nn.Module, str]:
    """The model of an mmpretrain, mmdet or mmseg config, in eval mode, and its toolbox.

    A top-level ``data_preprocessor`` goes into the model, as MMEngine's Runner puts it.
    No weights are loaded (no ``init_weights``, which would load a pretrained backbone).

    Args:
        cfg: A config or its file.

    Raises:
        ConfigError: as :func:`load_config` and :func:`config_scope`.
    """
    path = cfg if isinstance(cfg, str) else (cfg.filename or 'the config')
    cfg = load_config(cfg) if isinstance(cfg, str) else cfg
    scope = config_scope(cfg, path)
    model_cfg = cfg.model.copy()
    if cfg.get('data_preprocessor'):
        model_cfg.setdefault('data_preprocessor', cfg.data_preprocessor)
    with DefaultScope.overwrite_default_scope(scope):
        model = MODELS.build(model_cfg)
    return model.eval(), scope


def load_checkpoint(model: nn.Module, source: str) -> dict:
    """Load a whole-model checkpoint into ``model``, safely and completely.

    Read with the package's decoder (a file, a ``save_pretrained`` folder, a URL or a hub
    repository id); an official or transformers CvT checkpoint takes an mmpretrain
    classifier's layout; keys the model lacks are ignored, as MMEngine does. The checkpoint's
    ``meta.dataset_meta`` (class names, palette), checked, becomes ``model.dataset_meta``.

    Returns:
        The checkpoint read.

    Raises:
        FileNotFoundError: ``source`` is a local path that does not exist.
        CheckpointError: it cannot be read safely, leaves weights of the model unloaded (the
            missing keys are named), or carries a malformed ``dataset_meta``.
    """
    label = f'checkpoint {source!r}'
    checkpoint = canonical_checkpoint(read_checkpoint(source), label)
    check_checkpoint_fits(model, checkpoint, label)
    meta = checkpoint.get('meta') if isinstance(checkpoint, Mapping) else None
    dataset_meta = meta.get('dataset_meta') if isinstance(meta, Mapping) else None
    if dataset_meta is not None:
        check_dataset_meta(dataset_meta, label, predicted_classes(model))
        model.dataset_meta = dict(dataset_meta)
    model.load_state_dict(unwrap_state_dict(checkpoint, label), strict=False)
    return checkpoint


def init_model(config: Config | str, checkpoint: str | None = None,
               device: str = 'cpu') -> nn.Module:
    """The model of a config (:func:`build_model`) with a checkpoint in it
    (:func:`load_checkpoint`), on ``device``, in eval mode."""
    model, _ = build_model(config)
    if checkpoint:
        load_checkpoint(model, checkpoint)
    return model.to(device).eval()


__all__ = ['DEFAULT_SHAPES', 'EXTRAS', 'build_model', 'check_toolbox', 'config_scope',
           'init_model', 'load_checkpoint', 'load_config']
