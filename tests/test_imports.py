"""Importing any module of the package registers and defines; it replaces nothing of
MMEngine, torch or the toolboxes. CvT's own loaders read safely with no opt-in at all.

Each check runs in a fresh interpreter: within the test process other tests import and
register all sorts of things.
"""
import importlib.util
import json
import subprocess
import sys
import textwrap

import pytest

from tests.helpers import ENV, ROOT

#: Everything whose functions, classes and registries are watched.
WATCHED = ('torch', 'mmengine', 'mmcv', 'mmdet', 'mmseg', 'mmpretrain', 'mmdeploy')

SNAPSHOT = textwrap.dedent("""
    import importlib, json, pkgutil, sys
    import torch, torch.nn.functional, torch.onnx
    import mmengine.config, mmengine.fileio, mmengine.hooks, mmengine.infer, mmengine.logging
    import mmengine.registry, mmengine.runner, mmengine.dataset, mmengine.optim
    import mmdet.apis, mmseg.apis, mmpretrain.apis
    try:  # not in the oldest environment
        import mmdeploy.core
    except ImportError:
        mmdeploy = None
    from mmengine.registry import Registry

    def snapshot():
        seen = {}
        for name, module in list(sys.modules.items()):
            if module is None or name.split('.')[0] not in WATCHED:
                continue
            for attr, value in list(vars(module).items()):
                seen[f'{name}.{attr}'] = id(value)
                if isinstance(value, type) and value.__module__ == name:
                    for member, inner in list(vars(value).items()):
                        seen[f'{name}.{attr}.{member}'] = id(inner)
                if isinstance(value, Registry):
                    for key, cls in list(value.module_dict.items()):
                        seen[f'{name}.{attr}[{key}]'] = id(cls)
        from mmengine.runner import CheckpointLoader
        from mmengine.fileio.backends import registry_utils
        for prefix, loader in CheckpointLoader._schemes.items():
            seen[f'scheme {prefix}'] = id(loader)
        for key, backend in registry_utils.backends.items():
            seen[f'backend {key}'] = id(backend)
        for key, backend in registry_utils.prefix_to_backends.items():
            seen[f'prefix {key}'] = id(backend)
        return seen

    before = snapshot()
    import cvt_backbone
    modules = [info.name for info in pkgutil.walk_packages(cvt_backbone.__path__, 'cvt_backbone.')]
    imported = [name for name in modules if mmdeploy or name.split('.')[1] != 'deploy']
    for name in imported:
        importlib.import_module(name)
    after = snapshot()
    # MMEngine's public CheckpointLoader.register_scheme rebuilds its (sorted) dict of
    # schemes; the schemes themselves are compared one by one above.
    changed = sorted(k for k in before if k in after and before[k] != after[k]
                     and not k.endswith(('._instance_dict', '.__annotations__',
                                         'CheckpointLoader._schemes')))
    print(json.dumps(dict(modules=modules, imported=imported, changed=changed)))
""")


@pytest.mark.slow
def test_importing_any_module_of_the_package_replaces_nothing():
    script = f'WATCHED = {WATCHED!r}\n' + SNAPSHOT
    result = subprocess.run([sys.executable, '-c', script], cwd=ROOT, env=ENV,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert 'cvt_backbone.training' in seen['modules']
    assert 'cvt_backbone.deploy.mmdeploy_rewrites' in seen['modules']
    deploy = importlib.util.find_spec('mmdeploy') is not None
    assert ('cvt_backbone.deploy.mmdeploy_rewrites' in seen['imported']) == deploy
    assert seen['changed'] == []


@pytest.mark.slow
def test_cvt_loaders_read_safely_with_nothing_named(tmp_path):
    """init_cfg, ``pretrained=`` and load_cvt_weights take the package's reader, with no
    component named: a pickle that would run code is refused by name and runs nothing."""
    from tests.checkpoint import crafted
    path = crafted.os_system(tmp_path)
    script = textwrap.dedent(f"""
        import sys
        import cvt_backbone
        from cvt_backbone import CheckpointError, CvT, load_cvt_weights
        arch = dict(embed_dims=[16, 32, 48], depths=[1, 1, 2], num_heads=[1, 2, 3])
        attempts = dict(
            init_cfg=lambda: CvT(arch=arch, init_cfg=dict(type='Pretrained',
                                 checkpoint={str(path)!r})).init_weights(),
            pretrained=lambda: CvT(arch=arch, pretrained={str(path)!r}).init_weights(),
            load_cvt_weights=lambda: load_cvt_weights(CvT(arch=arch), {str(path)!r}))
        for name, attempt in attempts.items():
            try:
                attempt()
                print(name, 'loaded')
            except CheckpointError as err:
                print(name, 'refused' if 'posix.system' in str(err) else err)
        print('training', 'cvt_backbone.training' in sys.modules)
    """)
    result = subprocess.run([sys.executable, '-c', script], cwd=ROOT, env=ENV,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split('\n')[-5:-1] == [
        'init_cfg refused', 'pretrained refused', 'load_cvt_weights refused', 'training False']
    assert not (tmp_path / crafted.MARKER).exists()
