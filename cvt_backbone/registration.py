"""Put CvT into the model registry of each of mmpretrain, mmdet and mmseg that is installed.

After ``import cvt_backbone``, ``dict(type='CvT', ...)`` builds from each installed toolbox's
``MODELS`` registry, so configs of all three can use it through
``custom_imports=dict(imports=['cvt_backbone'], allow_failed_imports=False)``. A toolbox that is
not installed is skipped; one that is installed but fails to import is an error, since a
half-working toolbox would otherwise surface much later. Each toolbox's version is checked
against its tested range (:func:`cvt_backbone.versions.check_toolboxes`).
"""
from __future__ import annotations

import importlib
import importlib.util

from .models import CvT
from .versions import check_toolboxes, installed_version, supported_range

#: toolbox -> (its registry module, the pip package, the cvt-backbone extra that brings it)
TOOLBOXES = {
    'mmpretrain': ('mmpretrain.registry', 'mmpretrain', 'cls'),
    'mmdet': ('mmdet.registry', 'mmdet', 'det'),
    'mmseg': ('mmseg.registry', 'mmsegmentation', 'seg'),
}


def installed_toolboxes() -> list[str]:
    """The toolboxes of :data:`TOOLBOXES` that are installed (importable or not)."""
    return [name for name in TOOLBOXES if importlib.util.find_spec(name) is not None]


def _register() -> dict:
    registries = {}
    for name in installed_toolboxes():
        module, package, extra = TOOLBOXES[name]
        try:
            registry = importlib.import_module(module).MODELS
        except (ImportError, AssertionError) as err:
            # The toolboxes assert their mmcv and mmengine ranges at import.
            version = installed_version(name) or '(unknown version)'
            detail = str(err).strip().splitlines()[0] if str(err).strip() else repr(err)
            raise ImportError(f'cvt_backbone: {package} {version} is installed but does not '
                              f'import ({detail}); supported: {package}{supported_range(name)}'
                              f' with mmcv{supported_range("mmcv")} (pip install -e .[{extra}])'
                              ) from err
        registry.register_module(module=CvT)
        registries[name] = registry
    check_toolboxes(registries)
    if not registries:
        extras = ', '.join(f'{package} (pip install cvt-backbone[{extra}])'
                           for _, package, extra in TOOLBOXES.values())
        raise ImportError(f'cvt_backbone needs at least one OpenMMLab toolbox to register CvT '
                          f'in, and none is installed: {extras}, or all three with [all]')
    return registries


#: The model registries CvT was put into, by toolbox.
REGISTRIES = _register()
