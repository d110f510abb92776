"""CvT builds from the registries of all three toolboxes, through custom_imports, and with
any one toolbox alone; with none, the import error names them."""
import subprocess
import sys
import textwrap

import pytest
import torch

import cvt_backbone
from tests.helpers import ENV

TINY = dict(embed_dims=[16, 32, 48], depths=[1, 1, 2], num_heads=[1, 2, 3])


@pytest.mark.parametrize('toolbox', ['mmpretrain', 'mmdet', 'mmseg'])
def test_builds_from_toolbox_registry(toolbox):
    model = cvt_backbone.REGISTRIES[toolbox].build(dict(type='CvT', arch=TINY))
    assert isinstance(model, cvt_backbone.CvT)
    assert model.eval()(torch.randn(1, 3, 32, 32))[0].shape == (1, 16, 8, 8)


@pytest.mark.slow
def test_custom_imports_in_a_fresh_process(tmp_path):
    config = tmp_path / 'cfg.py'
    config.write_text(textwrap.dedent(f"""
        custom_imports = dict(imports=['cvt_backbone'], allow_failed_imports=False)
        model = dict(type='CvT', arch={TINY!r}, out_indices=(2,))
    """))
    script = textwrap.dedent(f"""
        from mmengine.config import Config
        cfg = Config.fromfile({str(config)!r})
        from mmdet.registry import MODELS as DET
        from mmseg.registry import MODELS as SEG
        from mmpretrain.registry import MODELS as CLS
        for registry in (DET, SEG, CLS):
            print(type(registry.build(cfg.model)).__name__)
    """)
    result = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ['CvT', 'CvT', 'CvT']


#: The toolboxes, by import name, with the registry module CvT is built from.
TOOLBOXES = {'mmpretrain': 'mmpretrain.registry', 'mmdet': 'mmdet.registry',
             'mmseg': 'mmseg.registry'}


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
@pytest.mark.parametrize('toolbox', list(TOOLBOXES))
def test_import_with_a_single_toolbox_builds_from_its_registry(toolbox):
    result = run_with_only([toolbox], textwrap.dedent(f"""
        import torch
        import cvt_backbone
        from {TOOLBOXES[toolbox]} import MODELS
        model = MODELS.build(dict(type='CvT', arch={TINY!r}))
        print(sorted(cvt_backbone.REGISTRIES), type(model).__name__,
              tuple(model.eval()(torch.randn(1, 3, 32, 32))[0].shape))
        print(sorted({{n.split('.')[0] for n, m in sys.modules.items()
                      if m is not None and n.split('.')[0] in {list(TOOLBOXES)!r}}}))
    """))
    assert result.returncode == 0, result.stderr
    registries, imported = result.stdout.strip().splitlines()
    assert registries == f"['{toolbox}'] CvT (1, 16, 8, 8)"
    assert imported == f"['{toolbox}']"


@pytest.mark.slow
def test_import_without_any_toolbox_names_the_three_and_their_extras():
    result = run_with_only([], 'import cvt_backbone\n')
    assert result.returncode != 0
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith('ImportError: cvt_backbone needs at least one OpenMMLab toolbox')
    for package, extra in (('mmpretrain', 'cls'), ('mmdet', 'det'), ('mmsegmentation', 'seg'),
                           ('', 'all')):
        assert package in error and f'[{extra}]' in error, error
