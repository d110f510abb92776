"""The package's version, the versions it supports (the ends CI tests, ``setup.py``'s
ranges), and the checks of them.

``import cvt_backbone`` runs :func:`check_core`: torch 2.1 or later (the CvT scale in
``scaled_dot_product_attention``), a working NumPy bridge, ``pkg_resources`` for MMEngine's
``_base_ = 'mmdet::...'`` (a warning), torch and mmengine in range (a :class:`VersionWarning`).
Where a toolbox is used, :func:`cvt_backbone.apis.check_toolbox` checks it and mmcv. Each
message names the version found and the versions supported.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import re
import sys
import warnings

__version__ = '0.1.0'

#: import name -> (distribution name, lowest supported release, first unsupported release).
SUPPORTED = {
    'torch': ('torch', (2, 1), (2, 15)),
    'mmengine': ('mmengine', (0, 10, 3), (0, 11)),
    'mmcv': ('mmcv', (2, 1), (2, 2)),
    'mmdet': ('mmdet', (3, 2), (3, 4)),
    'mmseg': ('mmsegmentation', (1, 2, 2), (1, 3)),
    'mmpretrain': ('mmpretrain', (1, 1), (1, 3)),
}
#: Why a version below the range is more than untested, where that is known.
_BELOW_RANGE = {
    'mmengine': 'releases before 0.10.3 do not skip the batches already trained when an '
                'iteration-based run resumes',
    'mmseg': "releases before 1.2.2 fail in cross-entropy with class_weight ('only one "
             "element tensors can be converted')",
}


class VersionWarning(UserWarning):
    """A package's version, or mmcv's build, is outside what cvt-backbone is tested with."""


def release(version: str) -> tuple[int, ...] | None:
    """The numeric release of a version string (``'2.1.2+cu121'`` -> ``(2, 1, 2)``)."""
    match = re.match(r'\s*v?(\d+(?:\.\d+)*)', version)
    return tuple(int(part) for part in match.group(1).split('.')) if match else None


def installed_version(name: str) -> str | None:
    """The version of an installed package: its ``__version__``, else its metadata.

    Args:
        name: The import name (a key of :data:`SUPPORTED`).

    Returns:
        The version string, or None when neither says one.
    """
    module = sys.modules.get(name)
    version = getattr(module, '__version__', None)
    if isinstance(version, str):
        return version
    try:
        return importlib.metadata.version(SUPPORTED[name][0])
    except importlib.metadata.PackageNotFoundError:
        return None


def _distribution_version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return '(not installed)'


def supported_range(name: str) -> str:
    """``'>=2.1,<2.15'`` for ``'torch'``."""
    _, low, high = SUPPORTED[name]
    return f'>={".".join(map(str, low))},<{".".join(map(str, high))}'


def version_problem(name: str) -> str | None:
    """A one-line description of why ``name``'s version is not a supported one, or None."""
    found = installed_version(name)
    if found is None:
        return (f'cvt_backbone: the version of {SUPPORTED[name][0]} cannot be read (no '
                f'__version__, no metadata); supported: {supported_range(name)}')
    numbers = release(found)
    _, low, high = SUPPORTED[name]
    if numbers is not None and low <= numbers < high:
        return None
    reason = _BELOW_RANGE.get(name) if numbers is not None and numbers < low else None
    return (f'cvt_backbone: {SUPPORTED[name][0]} {found} is installed; cvt-backbone is tested '
            f'with {SUPPORTED[name][0]}{supported_range(name)}'
            + (f' ({reason})' if reason else ''))


_warned: set[str] = set()


def warn_once(message: str) -> None:
    """A :class:`VersionWarning`, once per process for each message; it points at the caller
    of the check (stacklevel 3)."""
    if message not in _warned:
        _warned.add(message)
        warnings.warn(message, VersionWarning, stacklevel=3)


def check_core() -> None:
    """Check torch, NumPy and mmengine (called before anything else is imported).

    Raises:
        ImportError: torch is older than 2.1, or torch cannot use the installed NumPy.
    """
    import torch
    numbers = release(torch.__version__)
    if numbers is not None and numbers < SUPPORTED['torch'][1]:
        raise ImportError(f'cvt_backbone needs torch{supported_range("torch")}, found torch '
                          f'{torch.__version__} (scaled_dot_product_attention takes the CvT '
                          f'attention scale from torch 2.1 on)')
    problem = version_problem('torch')
    if problem:
        warn_once(problem)
    _check_numpy_bridge(torch)
    import mmengine  # noqa: F401  (for its __version__)
    problem = version_problem('mmengine')
    if problem:
        warn_once(problem)
    if importlib.util.find_spec('pkg_resources') is None:
        warn_once(f'cvt_backbone: setuptools {_distribution_version("setuptools")} has no '
              f'pkg_resources, which mmengine needs to resolve config paths such as '
              f"'mmdet::...': pip install 'setuptools<81'")


def _check_numpy_bridge(torch) -> None:
    import numpy as np
    try:
        torch.zeros(1).numpy()
    except RuntimeError as err:
        raise ImportError(f'cvt_backbone: torch {torch.__version__} cannot use numpy '
                          f'{np.__version__} ({str(err).strip().splitlines()[0]}); install the '
                          f'numpy major version torch was built with (numpy<2 for torch '
                          f'2.1)') from None
