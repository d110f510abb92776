"""Bad environments are named: at import (torch, NumPy, mmengine) and where a toolbox is used
(its version, mmcv without its compiled ops); each version warning once per process."""
import importlib.util
import subprocess
import sys
import textwrap
import types

import pytest

from cvt_backbone import apis
from cvt_backbone import version as versions
from tests.helpers import ENV


def import_after(prelude: str, warnings_fail: bool = False) -> subprocess.CompletedProcess:
    """``import cvt_backbone`` in a fresh interpreter, after ``prelude`` changed the world.

    With ``warnings_fail`` this package's warnings are errors, so that the last line of the
    output is the warning.
    """
    fail = ("import warnings; warnings.filterwarnings('error', message='cvt_backbone: ')\n"
            if warnings_fail else '')
    script = fail + textwrap.dedent(prelude) + '\nimport cvt_backbone\nprint("imported")\n'
    return subprocess.run([sys.executable, '-c', script], capture_output=True, text=True,
                          timeout=300, env=ENV)


def last_line(result: subprocess.CompletedProcess) -> str:
    return result.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize('version, found', [('2.1.2+cu121', (2, 1, 2)), ('2.14.1', (2, 14, 1)),
                                            ('1.2.0rc1', (1, 2, 0)), ('v0.10', (0, 10)),
                                            ('unknown', None)])
def test_release_numbers(version, found):
    assert versions.release(version) == found


def test_the_environment_under_test_is_supported():
    for name in ('torch', 'mmengine', 'mmcv', 'mmdet', 'mmseg', 'mmpretrain'):
        assert versions.version_problem(name) is None, name


def test_a_module_without_version_falls_back_to_metadata(monkeypatch):
    import mmdet
    monkeypatch.delattr(mmdet, '__version__')
    assert versions.installed_version('mmdet') == __import__(
        'importlib.metadata').metadata.version('mmdet')
    monkeypatch.setitem(versions.SUPPORTED, 'nameless', ('no-such-distribution', (1, ), (2, )))
    monkeypatch.setitem(sys.modules, 'nameless', types.ModuleType('nameless'))
    assert versions.version_problem('nameless') == (
        'cvt_backbone: the version of no-such-distribution cannot be read (no __version__, no '
        'metadata); supported: >=1,<2')


@pytest.mark.parametrize('module, version, words', [
    ('torch', '2.15.0', 'torch 2.15.0 is installed; cvt-backbone is tested with '
                        'torch>=2.1,<2.15'),
    ('mmengine', '0.10.2', 'mmengine 0.10.2 is installed; cvt-backbone is tested with '
                           'mmengine>=0.10.3,<0.11 (releases before 0.10.3'),
    ('mmcv', '2.2.0', 'mmcv 2.2.0 is installed; cvt-backbone is tested with mmcv>=2.1,<2.2'),
    ('mmdet', '3.1.0', 'mmdet 3.1.0 is installed; cvt-backbone is tested with mmdet>=3.2,<3.4'),
    ('mmseg', '1.3.0', 'mmsegmentation 1.3.0 is installed; cvt-backbone is tested with '
                       'mmsegmentation>=1.2.2,<1.3'),
    ('mmpretrain', '1.0.2', 'mmpretrain 1.0.2 is installed; cvt-backbone is tested with '
                            'mmpretrain>=1.1,<1.3'),
])
def test_a_version_outside_its_range_is_a_warning(monkeypatch, module, version, words):
    """What ``import cvt_backbone`` (torch, mmengine) and the tools (the toolboxes, mmcv)
    check."""
    monkeypatch.setattr(sys.modules[module], '__version__', version)
    monkeypatch.setattr(versions, '_warned', set())
    with pytest.warns(versions.VersionWarning) as record:
        versions.check_core()
        for toolbox in ('mmdet', 'mmseg', 'mmpretrain'):
            apis.check_toolbox(toolbox)
    assert [str(w.message) for w in record] == ['cvt_backbone: ' + words + (
        '' if module != 'mmengine' else ' do not skip the batches already trained when an '
        'iteration-based run resumes)')]


@pytest.mark.slow  # fresh interpreters
def test_the_core_checks_run_at_import():
    result = import_after("import torch; torch.__version__ = '2.0.1+cpu'")
    assert result.returncode != 0
    assert last_line(result) == (
        'ImportError: cvt_backbone needs torch>=2.1,<2.15, found torch 2.0.1+cpu '
        '(scaled_dot_product_attention takes the CvT attention scale from torch 2.1 on)')


def test_mmcv_without_compiled_ops_is_an_error_where_mmdet_or_mmseg_are_used(monkeypatch):
    monkeypatch.setitem(sys.modules, 'mmcv._ext', None)
    apis.check_toolbox('mmpretrain')  # its models take mmcv.ops only where they say so
    for name, package in (('mmdet', 'mmdet'), ('mmseg', 'mmsegmentation')):
        with pytest.raises(ImportError) as error:
            apis.check_toolbox(name)
        assert str(error.value).startswith('mmcv 2.1.0 has no compiled ops that load with '
                                           'torch ')
        assert f'; {package} needs them: install mmcv>=2.1,<2.2' in str(error.value)


def test_a_toolbox_that_is_not_installed_is_named_with_its_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, 'mmseg', None)
    monkeypatch.setitem(sys.modules, 'mmseg.registry', None)
    with pytest.raises(ImportError, match=r'^mmsegmentation is not installed: install '
                                          r'mmsegmentation>=1\.2\.2,<1\.3 \(pip install '
                                          r'cvt-backbone\[seg\]\)$'):
        apis.check_toolbox('mmseg')


def test_a_torch_that_cannot_use_numpy_is_an_error(monkeypatch):
    """What torch 2.1 does beside NumPy 2 (``Tensor.numpy()`` raises), stood in for here."""
    import numpy as np
    import torch

    def numpy(self):
        raise RuntimeError('Numpy is not available')

    monkeypatch.setattr(torch.Tensor, 'numpy', numpy)
    with pytest.raises(ImportError) as error:
        versions.check_core()
    assert str(error.value) == (
        f'cvt_backbone: torch {torch.__version__} cannot use numpy {np.__version__} (Numpy is '
        f'not available); install the numpy major version torch was built with (numpy<2 for '
        f'torch 2.1)')


def test_setuptools_without_pkg_resources_is_a_warning(monkeypatch):
    monkeypatch.setattr(versions, '_warned', set())
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, 'find_spec',
                        lambda name, *args: None if name == 'pkg_resources' else real(name, *args))
    with pytest.warns(versions.VersionWarning, match=r"setuptools .* has no pkg_resources, .*"
                                                     r"pip install 'setuptools<81'"):
        versions.check_core()


def test_a_toolbox_that_fails_its_own_version_assert_is_named(monkeypatch):
    """mmdet asserts mmcv's version when it is imported (``mmcv>=2.0.0rc4, <2.2.0``)."""
    import mmcv
    monkeypatch.setattr(mmcv, '__version__', '2.2.0')
    for name in [n for n in sys.modules if n == 'mmdet' or n.startswith('mmdet.')]:
        monkeypatch.delitem(sys.modules, name)
    with pytest.raises(ImportError) as error:
        apis.check_toolbox('mmdet')
    message = str(error.value)
    assert message.startswith('mmdet 3.') and 'does not import (MMCV==2.2.0 is used but ' \
        'incompatible' in message and message.endswith(
            'install mmdet>=3.2,<3.4 (pip install cvt-backbone[det])'), message
