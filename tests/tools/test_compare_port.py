"""tools/analysis_tools/compare_port.py: ours against the port as shipped and with QuickGELU."""
import re

import pytest

from tests.helpers import run_tool

pytestmark = pytest.mark.slow  # tool subprocesses, end to end

pytest.importorskip('transformers')


def test_quick_gelu_matches_and_exact_gelu_does_not():
    result = run_tool('analysis_tools/compare_port.py', 'cvt-13', '--shape', '64', '80')
    assert result.returncode == 0, result.stderr[-2000:]
    rows = re.findall(r'^\| (.+?) \| (\d[0-9.e+-]*) \| (\d[0-9.e+-]*) \|$', result.stdout,
                      re.M)
    assert [r[0] for r in rows] == ['stage 0 map', 'stage 1 map', 'stage 2 map', 'class token',
                                    'logits']
    assert all(float(quick) < 1e-5 for _, _, quick in rows)
    assert all(float(shipped) > 1e-4 for _, shipped, _ in rows)
