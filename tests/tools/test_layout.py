"""The package is the library and tools/ holds scripts: what imports what."""
import ast
import subprocess
import sys

import pytest

from tests.helpers import ENV, ROOT


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
    for part in ('apis', 'training', 'deploy', 'checkpoint.download', 'checkpoint.hub'):
        assert (ROOT / 'cvt_backbone' / f"{part.replace('.', '/')}").with_suffix('.py').is_file() \
            or (ROOT / 'cvt_backbone' / part).is_dir(), part
        assert not [m for m in loaded if m.startswith(f'cvt_backbone.{part}')], part


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
