"""What a newcomer sees from the tools: only their own business, shortened schedules that
work, every test image drawn into one place, metrics rounded to what they mean."""
import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # tool subprocesses, end to end

#: Third-party lines the tools' entry points silence.
NOISE = ('pkg_resources is deprecated', 'paramwise_options', 'PyTorch compiling details',
         '"FileClient" will be deprecated', 'HardDiskBackend')


@pytest.fixture(scope='module')
def run(trained_cls) -> dict:
    """The demo classifier shortened with --cfg-options to 1 epoch, then tested with
    --show-dir and --metrics-out (the session's one run)."""
    return trained_cls


@pytest.mark.parametrize('tool', ['trained', 'tested'])
def test_the_tools_print_nothing_of_third_parties(run, tool):
    output = run[tool].stdout + run[tool].stderr
    assert not [noise for noise in NOISE if noise in output]


def test_a_schedule_shortened_on_the_command_line_fits_and_says_so(run):
    out = run['trained'].stdout
    assert ('param_scheduler: the loop is shorter than the 4 iterations the schedule was '
            'written for: every milestone was scaled by 0.5 to the 2 iterations of this run') in out
    assert (run['tmp'] / 'work' / 'epoch_1.pth').is_file()


def test_show_dir_draws_every_test_image_into_the_work_dirs_folder(run):
    images = sorted(Path(run['data'], 'val').rglob('*.png'))
    drawn = sorted((run['tmp'] / 'work' / 'vis').rglob('*.png'))
    assert len(images) > 1 and len(drawn) == len(images)


def test_metrics_are_rounded_to_what_they_mean(run):
    metrics = json.loads((run['tmp'] / 'metrics.json').read_text())
    assert metrics and all(value == round(value, 4) for value in metrics.values())
