"""Generated torch and safetensors files: a value of the closed set or one CheckpointError.

The default budget runs in about a minute. A long campaign sets ``CVT_FUZZ_EXAMPLES`` (see
docs/fuzzing.md): every property then runs that many examples, and the subprocess test runs
them under a memory limit with a time limit per file, printing its figures.
"""
import json
import os
import resource
import signal
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cvt_backbone import CheckpointError, read_checkpoint
from tests.checkpoint.strategies import (
    TRUSTED,
    assert_closed,
    assert_same,
    safetensors_files,
    torch_files,
)
from tests.helpers import ROOT

CAMPAIGN = int(os.environ.get('CVT_FUZZ_EXAMPLES', 0))
#: Memory a child may use beyond what its imports take, and seconds per file.
CHILD_MEMORY = 2 << 30
FILE_SECONDS = 20


def fuzz_settings(examples: int) -> settings:
    return settings(max_examples=CAMPAIGN or examples, deadline=None, database=None,
                    suppress_health_check=list(HealthCheck))


def read_any(data: bytes) -> None:
    """The property: a closed value, or a CheckpointError (any other exception fails)."""
    try:
        value = read_checkpoint(data)
    except CheckpointError as error:
        assert '\n' not in str(error) and str(error).startswith(
            ('Refused to load checkpoint', 'Could not read')), str(error)
        return
    assert_closed(value)


EXPECTED = read_checkpoint(TRUSTED)


@fuzz_settings(2000)
@given(torch_files())
def test_torch_files_decode_to_closed_values_or_one_error(data):
    read_any(data)


@fuzz_settings(500)
@given(safetensors_files())
def test_safetensors_files_read_or_one_error(data):
    read_any(data)


@fuzz_settings(800)
@given(torch_files())
def test_no_file_changes_how_the_next_reads(data):
    read_any(data)
    assert_same(read_checkpoint(TRUSTED), EXPECTED)


def run_batch(examples: int) -> dict:
    """Read ``examples`` generated files under a memory limit and a time limit per file.

    Returns:
        The figures: examples read, failures (another exception or an open value), hangs
        (files over :data:`FILE_SECONDS`) and the peak resident memory in MiB.
    """
    with open('/proc/self/status') as status:  # the imports' address space, plus the budget
        mapped = next(int(line.split()[1]) for line in status if line.startswith('VmSize'))
    resource.setrlimit(resource.RLIMIT_AS, (mapped * 1024 + CHILD_MEMORY, ) * 2)
    figures = {'examples': 0, 'failures': 0, 'hangs': 0, 'first_failure': None}

    def timeout(*_):
        raise TimeoutError(f'a file took more than {FILE_SECONDS} s')

    signal.signal(signal.SIGALRM, timeout)

    @settings(max_examples=examples, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(st.one_of(torch_files(), safetensors_files()))
    def read_one(data):
        figures['examples'] += 1
        signal.alarm(FILE_SECONDS)
        try:
            read_any(data)
            assert_same(read_checkpoint(TRUSTED), EXPECTED)
        except TimeoutError:
            figures['hangs'] += 1
        except BaseException as error:  # noqa: BLE001 -- counted, and the first reported
            figures['failures'] += 1
            figures['first_failure'] = figures['first_failure'] or (
                f'{type(error).__name__}: {error} on {data[:200]!r}')
        finally:
            signal.alarm(0)

    read_one()
    figures['peak_rss_mib'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    return figures


@pytest.mark.slow
def test_generated_files_in_a_child_with_a_memory_limit():
    examples = CAMPAIGN or 200
    code = ('import json; from tests.checkpoint.test_fuzz import run_batch; '
            f'print(json.dumps(run_batch({examples})))')
    child = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True,
                           text=True, env={**os.environ, 'PYTHONPATH': str(ROOT)},
                           timeout=60 + examples * FILE_SECONDS)
    assert child.returncode == 0, child.stderr[-3000:]
    figures = json.loads(child.stdout.strip().splitlines()[-1])
    print(f'fuzz figures: {figures}')
    assert figures['examples'] >= min(examples, 100), figures
    assert figures['failures'] == 0 and figures['hangs'] == 0, figures
