"""tools/analysis_tools/vis_attention.py: the picture, and one error line for bad input."""
from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from cvt_backbone.apis import build_model
from cvt_backbone.checkpoint.write import atomic_save
from tests.helpers import ENV, ROOT, run_tool

pytestmark = pytest.mark.slow  # tool subprocesses, end to end

CONFIG = ROOT / 'configs' / 'demo' / 'cvt-tiny_shapes-cls.py'
TOOL = 'analysis_tools/vis_attention.py'


@pytest.fixture(scope='module')
def runs(tmp_path_factory, shapes_cls) -> dict:
    tmp = tmp_path_factory.mktemp('vis_attention')
    model, _ = build_model(str(CONFIG))
    atomic_save({'state_dict': model.state_dict(), 'meta': {}}, tmp / 'cls.pth')
    image = next(shapes_cls.rglob('*.png'))   # 32x32
    args = [CONFIG, tmp / 'cls.pth', image]
    cases = {
        'picture': [*args, '--points', '3,4', '30,20', '--shape', '48', '64',
                    '--out', tmp / 'att.png'],
        'stage0': [*args, '--stage', '0', '--out', tmp / 'att0.png'],
        'bad_stage': [*args, '--stage', '3'],
        'bad_point': [*args, '--points', '3;4'],
        'outside': [*args, '--points', '40,4'],
        'no_image': [CONFIG, tmp / 'cls.pth', tmp / 'missing.png'],
    }
    def run(name: str) -> subprocess.CompletedProcess:
        if name != 'default_out':
            return run_tool(TOOL, *cases[name])
        # as the README shows it, without --out, from a folder of the user's own
        (tmp / 'cwd').mkdir()
        return subprocess.run([sys.executable, str(ROOT / 'tools' / TOOL), *map(str, args)],
                              cwd=tmp / 'cwd', env=ENV, capture_output=True, text=True,
                              timeout=600)

    cases['default_out'] = args
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = dict(zip(cases, pool.map(run, cases)))
    results['tmp'] = tmp
    return results


def test_draws_class_token_and_points_for_every_head(runs):
    result = runs['picture']
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stdout.splitlines() if 'strongest key cell' in line]
    assert [line.split(':')[0] for line in lines] == [
        'class token', 'query (3, 4)', 'query (30, 20)']
    assert all(line.count('head ') == 4 for line in lines)  # the last stage's 4 heads
    width, height = Image.open(runs['tmp'] / 'att.png').size
    assert width > height  # 5 columns (image + 4 heads) by 3 rows


def test_a_stage_without_class_token_has_only_the_points(runs):
    result = runs['stage0']
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stdout.splitlines() if 'strongest key cell' in line]
    assert len(lines) == 1 and lines[0].startswith('query (15.5, 15.5)')  # the centre
    assert lines[0].count('head ') == 1
    assert np.array(Image.open(runs['tmp'] / 'att0.png')).std() > 0


@pytest.mark.parametrize('case, message', [
    ('bad_stage', 'error: --stage 3: this CvT has stages 0..2'),
    ('bad_point', "a point is x,y in image pixels, e.g. 40,25; got '3;4'"),
    ('outside', 'error: point (40, 4) lies outside the 32x32 image'),
    ('no_image', "error: cannot read image '"),
])
def test_bad_input_gets_one_error_line(runs, case, message):
    result = runs[case]
    assert result.returncode != 0
    assert 'Traceback' not in result.stderr, result.stderr[-3000:]
    assert message in result.stderr.strip().splitlines()[-1]


def test_without_out_the_picture_goes_into_work_dirs(runs):
    result = runs['default_out']
    assert result.returncode == 0, result.stderr[-3000:]
    written = runs['tmp'] / 'cwd' / 'work_dirs' / 'attention' / 'attention.png'
    assert result.stdout.strip().splitlines()[-1] == 'Wrote work_dirs/attention/attention.png'
    assert sorted(p.name for p in (runs['tmp'] / 'cwd').rglob('*') if p.is_file()) == [
        'attention.png'] and Image.open(written).size[0] > 0
