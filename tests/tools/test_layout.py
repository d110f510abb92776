"""The package is the library and tools/ holds scripts: what imports what."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ENV, ROOT


def _lines(path) -> int:
    return len(path.read_text().splitlines())


@pytest.mark.slow
def test_import_cvt_backbone_leaves_the_optional_parts_out():
    code = ('import sys, cvt_backbone; print(" ".join(sorted(m for m in sys.modules '
            'if m.startswith("cvt_backbone."))))')
    result = subprocess.run([sys.executable, '-c', code], cwd=ROOT, env=ENV,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    loaded = result.stdout.split()
    assert 'cvt_backbone.models.cvt' in loaded
    # what a config, a tool or a network source brings in when it needs it
    for part in ('apis', 'training', 'deploy', 'checkpoint.download', 'checkpoint.hub',
                 'checkpoint.decode'):
        assert (ROOT / 'cvt_backbone' / f"{part.replace('.', '/')}").with_suffix('.py').is_file() \
            or (ROOT / 'cvt_backbone' / part).is_dir(), part
        assert not [m for m in loaded if m.startswith(f'cvt_backbone.{part}')], part
    assert sum(_lines(_source(m)) for m in ['cvt_backbone', *loaded]) <= 3000


def _source(module: str) -> Path:
    path = ROOT / Path(*module.split('.'))
    return path.with_suffix('.py') if path.with_suffix('.py').is_file() else path / '__init__.py'


def test_the_package_is_a_backbone_not_a_platform():
    """What users install: at most 5,000 lines, no demo, benchmark or subprocess machinery."""
    files = sorted((ROOT / 'cvt_backbone').rglob('*.py'))
    assert sum(_lines(f) for f in files) <= 5000
    for path in files:
        names, _ = imports_and_path_edits(path)
        assert not names & {'subprocess', 'multiprocessing', 'tools'}, path


def imports_and_path_edits(path) -> tuple[set[str], bool]:
    """Top-level names of the modules a file imports (at any depth of its code), and
    whether it touches ``sys.path``."""
    names, edits_path = set(), False
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split('.')[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split('.')[0])
        elif (isinstance(node, ast.Attribute) and node.attr == 'path'
              and isinstance(node.value, ast.Name) and node.value.id == 'sys'):
            edits_path = True
    return names, edits_path


@pytest.mark.parametrize('folder', ['tools', 'tests'])
def test_scripts_and_tests_import_the_package_not_each_other(folder):
    files = sorted((ROOT / folder).rglob('*.py'))
    assert files
    for path in files:
        names, edits_path = imports_and_path_edits(path)
        assert 'tools' not in names and not edits_path, path
    if folder == 'tools':
        assert not [p for p in files if p.name == '__init__.py']
