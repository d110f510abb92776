"""The install files agree: setup.py's ranges are the ones the package checks, the two tested
environments (tools/env/*.txt) are the two ends of them, the license is the declared one, and
the README's test command lints."""
import re

import pytest
from packaging.requirements import Requirement

from cvt_backbone import version as versions
from tests.helpers import ROOT

#: Distribution -> import name, for the packages whose ranges are checked.
CHECKED = {dist: name for name, (dist, _, _) in versions.SUPPORTED.items()}


def setup_requirements() -> dict[str, Requirement]:
    """Every quoted requirement string of setup.py, by distribution name."""
    text = (ROOT / 'setup.py').read_text()
    found = {}
    for literal in re.findall(r"'([A-Za-z][\w.-]*(?:\[\w+\])?\s*[<>=!~][^']*)'", text):
        requirement = Requirement(literal)
        found[requirement.name] = requirement
    return found


def pins(name: str) -> dict[str, str]:
    """``package==version`` lines of ``tools/env/<name>.txt``."""
    lines = (ROOT / 'tools' / 'env' / f'{name}.txt').read_text().splitlines()
    return dict(line.split('==') for line in lines if line and not line.startswith('#'))


def bounds(pairs) -> set[tuple[str, tuple[int, ...]]]:
    """``{('>=', (2, 1)), ('<', (2, 15))}``, trailing zeros dropped (2.1.0 is 2.1)."""
    def strip(numbers):
        numbers = list(numbers)
        while len(numbers) > 1 and numbers[-1] == 0:
            numbers.pop()
        return tuple(numbers)
    return {(op, strip(numbers)) for op, numbers in pairs}


def test_setup_py_declares_the_ranges_the_package_checks():
    requirements = setup_requirements()
    for dist, name in CHECKED.items():
        declared = bounds((spec.operator, versions.release(spec.version))
                          for spec in requirements[dist].specifier)
        checked = bounds([('>=', versions.SUPPORTED[name][1]), ('<', versions.SUPPORTED[name][2])])
        assert declared == checked, dist


@pytest.mark.parametrize('environment', ['oldest', 'newest'])
def test_each_tested_environment_lies_in_every_range(environment):
    requirements = setup_requirements()
    for dist, version in pins(environment).items():
        if dist in requirements:
            assert requirements[dist].specifier.contains(version), (environment, dist, version)
        if dist in CHECKED:
            low, high = versions.SUPPORTED[CHECKED[dist]][1:]
            assert low <= versions.release(version) < high, (environment, dist, version)


def test_the_oldest_environment_is_the_lower_end_of_each_range():
    oldest = pins('oldest')
    for dist, name in CHECKED.items():
        low = versions.SUPPORTED[name][1]
        assert versions.release(oldest[dist])[:len(low)] == low, (dist, oldest[dist], low)


def test_the_license_file_is_the_declared_one():
    assert "license='Apache-2.0'" in (ROOT / 'setup.py').read_text()
    text = (ROOT / 'LICENSE').read_text()
    assert text.lstrip().startswith('Apache License') and 'Version 2.0, January 2004' in text


def test_the_test_command_lints_before_it_tests():
    """``make test`` (what the README names and .ci/run calls) runs ruff with the settings of
    pyproject.toml, pinned in the newest environment."""
    makefile = (ROOT / 'Makefile').read_text()
    assert re.search(r'^test-newest: lint$', makefile, re.M)
    assert re.search(r'^lint: setup\n\t\$\(PY\) -m ruff check \.$', makefile, re.M)
    assert '[tool.ruff' in (ROOT / 'pyproject.toml').read_text()
    assert 'ruff' in pins('newest')
    assert (ROOT / '.ci' / 'run').read_text().strip().endswith('make test')
