"""CvT is registered once, in MMEngine's root MODELS, and builds from the registries of all
three toolboxes, through custom_imports, and with any one toolbox alone or none installed;
``import cvt_backbone`` imports no toolbox's models."""
import subprocess
import sys
import textwrap

import pytest
import torch
from mmengine.registry import MODELS

import cvt_backbone
from tests.helpers import ENV, TINY

#: The toolboxes, by import name, with the registry module CvT is built from.
TOOLBOXES = {'mmpretrain': 'mmpretrain.registry', 'mmdet': 'mmdet.registry',
             'mmseg': 'mmseg.registry'}


def test_registered_once_in_the_root_registry():
    assert MODELS.get('CvT') is cvt_backbone.CvT
    import mmdet.registry
    import mmpretrain.registry
    import mmseg.registry
    for registry in (mmdet.registry.MODELS, mmseg.registry.MODELS, mmpretrain.registry.MODELS):
        assert 'CvT' not in registry.module_dict  # found through the parent, not copied


@pytest.mark.parametrize('toolbox', list(TOOLBOXES))
def test_builds_from_each_toolbox_registry(toolbox):
    import importlib
    registry = importlib.import_module(TOOLBOXES[toolbox]).MODELS
    model = registry.build(dict(type='CvT', arch=TINY))
    assert isinstance(model, cvt_backbone.CvT)
    assert model.eval()(torch.randn(1, 3, 32, 32))[0].shape == (1, 16, 8, 8)


def run_with_only(present: list[str], body: str) -> subprocess.CompletedProcess:
    """Run ``body`` in a fresh interpreter in which the other toolboxes cannot be imported.

    ``sys.modules[name] = None`` is how Python marks a module unimportable: ``import name``
    raises ModuleNotFoundError and ``importlib.util.find_spec(name)`` says it is not installed,
    as for a package that was never installed.
    """
    blocked = [name for name in TOOLBOXES if name not in present]
    script = f'import sys\nfor name in {blocked!r}:\n    sys.modules[name] = None\n' + body
    return subprocess.run([sys.executable, '-c', script], capture_output=True, text=True,
                          timeout=300, env=ENV)


@pytest.mark.slow
def test_custom_imports_in_a_fresh_process(tmp_path):
    config = tmp_path / 'cfg.py'
    config.write_text(textwrap.dedent(f"""
        custom_imports = dict(imports=['cvt_backbone'], allow_failed_imports=False)
        model = dict(type='CvT', arch={TINY!r}, out_indices=(2,))
    """))
    result = run_with_only(list(TOOLBOXES), textwrap.dedent(f"""
        from mmengine.config import Config
        cfg = Config.fromfile({str(config)!r})
        from mmdet.registry import MODELS as DET
        from mmseg.registry import MODELS as SEG
        from mmpretrain.registry import MODELS as CLS
        for registry in (DET, SEG, CLS):
            print(type(registry.build(cfg.model)).__name__)
    """))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ['CvT', 'CvT', 'CvT']


@pytest.mark.slow
@pytest.mark.parametrize('present', [[], *([name] for name in TOOLBOXES)])
def test_import_needs_no_toolbox_and_imports_none_of_their_models(present):
    """With one toolbox (or none) installed, ``import cvt_backbone`` works and builds CvT
    from MMEngine's registry (and the toolbox's); no toolbox's models are imported."""
    build = (f'from {TOOLBOXES[present[0]]} import MODELS\n' if present
             else 'from mmengine.registry import MODELS\n')
    result = run_with_only(present, textwrap.dedent("""
        import torch
        import cvt_backbone
        loaded = sorted(n for n in sys.modules if n.split('.')[0] in
                        ('mmdet', 'mmseg', 'mmpretrain') and n.endswith('.models'))
    """) + build + textwrap.dedent(f"""
        model = MODELS.build(dict(type='CvT', arch={TINY!r}))
        print(type(model).__name__, tuple(model.eval()(torch.randn(1, 3, 32, 32))[0].shape))
        print(loaded)
    """))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines() == ['CvT (1, 16, 8, 8)', '[]']
