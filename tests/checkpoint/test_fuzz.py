"""Generated torch and safetensors files: a value of the closed set or one CheckpointError,
read within a memory and CPU time proportional to the file's size.

The default budget runs in about a minute. A long campaign sets ``CVT_FUZZ_EXAMPLES`` (see
docs/fuzzing.md): every property then runs that many examples, and the subprocess test reads
them (after the largest file of each budget family) one by one in forked children under a
memory limit with a time limit per file, checking the resource property of
docs/decoder_budgets.md and printing its figures.
"""
import gc
import json
import os
import resource
import signal
import subprocess
import sys
import time

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cvt_backbone import CheckpointError, read_checkpoint
from tests.checkpoint.strategies import (
    TRUSTED,
    assert_closed,
    assert_same,
    budget_attacks,
    largest_attacks,
    safetensors_files,
    torch_files,
)
from tests.helpers import ROOT

CAMPAIGN = int(os.environ.get('CVT_FUZZ_EXAMPLES', 0))
#: Memory a child may use beyond what its imports take, and seconds per file.
CHILD_MEMORY = 2 << 30
FILE_SECONDS = 20
#: The property (docs/decoder_budgets.md): reading a file of n bytes grows the peak resident
#: memory by at most ``PEAK_PER_BYTE * n + PEAK_BASE`` bytes and takes at most
#: ``CPU_PER_BYTE * n + CPU_BASE`` seconds of CPU.
PEAK_PER_BYTE, PEAK_BASE = 64, 96 << 20
CPU_PER_BYTE, CPU_BASE = 5e-6, 1.0
#: The size of the largest budget attacks the subprocess test reads.
ATTACK_BYTES = 3 << 19


def fuzz_settings(examples: int) -> settings:
    return settings(max_examples=CAMPAIGN or examples, deadline=None, database=None,
                    suppress_health_check=list(HealthCheck))


def outcome(data: bytes) -> tuple[object, CheckpointError | None]:
    """What reading ``data`` gives: its value, or the CheckpointError it raises."""
    try:
        return read_checkpoint(data), None
    except CheckpointError as error:
        return None, error


def assert_closed_or_one_error(value: object, error: CheckpointError | None) -> None:
    """The property: a closed value, or a CheckpointError of one line (any other exception
    fails where it is raised)."""
    if error is not None:
        assert '\n' not in str(error) and str(error).startswith(
            ('Refused to load checkpoint', 'Could not read')), str(error)
    else:
        assert_closed(value)


def read_any(data: bytes) -> None:
    assert_closed_or_one_error(*outcome(data))


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


@fuzz_settings(300)
@given(budget_attacks())
def test_budget_attacks_decode_to_closed_values_or_one_error(data):
    read_any(data)


def _status(field: str) -> int:
    """A field of /proc/self/status in bytes (``VmRSS``, ``VmHWM``)."""
    with open('/proc/self/status') as status:
        return next(int(line.split()[1]) << 10 for line in status if line.startswith(field))


def measure(data: bytes) -> dict:
    """Read ``data`` in a forked child (whatever it allocates, the batch does not keep).

    Returns:
        ``size``; ``cpu``, the child's CPU seconds for the read; ``peak``, how far its peak
        resident memory rose above what it held before (the peak is reset first); ``error``,
        what went wrong (another exception than one CheckpointError, an open value, a trusted
        file read differently afterwards, the child's death or its timeout), else None.
    """
    reader, writer = os.pipe()
    pid = os.fork()
    if not pid:
        os.close(reader)
        report = {'size': len(data), 'error': None}
        try:
            signal.alarm(FILE_SECONDS)  # its default action ends the child: no report
            gc.collect()
            with open('/proc/self/clear_refs', 'w') as refs:
                refs.write('5')  # the peak resident size becomes the current one
            base, start = _status('VmRSS'), time.process_time()
            value, error = outcome(data)
            report.update(cpu=time.process_time() - start, peak=_status('VmHWM') - base)
            assert_closed_or_one_error(value, error)
            assert_same(read_checkpoint(TRUSTED), EXPECTED)
        except BaseException as error:  # noqa: BLE001 -- reported to the batch
            report['error'] = f'{type(error).__name__}: {error}'[:500]
        finally:
            os.write(writer, json.dumps(report).encode())
            os._exit(0)
    os.close(writer)
    with os.fdopen(reader) as pipe:
        text = pipe.read()
    _, status = os.waitpid(pid, 0)
    return json.loads(text) if text else {'size': len(data), 'error': f'the child ended '
                                          f'without a report (status {status}: a timeout?)'}


def bound(report: dict) -> tuple[float, float]:
    """A report's peak memory and CPU time as fractions of what the property allows."""
    size = report['size']
    return (report['peak'] / (PEAK_PER_BYTE * size + PEAK_BASE),
            report['cpu'] / (CPU_PER_BYTE * size + CPU_BASE))


def run_batch(examples: int) -> dict:
    """Read the largest file of each budget family, then ``examples`` generated files (half
    of them budget attacks), each in a forked child, under a memory limit.

    Returns:
        The figures: files read, failures and the first of them, files over the property's
        bounds and the first of them, and the largest fractions of the bounds used (with
        the sizes of those files).
    """
    with open('/proc/self/status') as status:  # the imports' address space, plus the budget
        mapped = next(int(line.split()[1]) for line in status if line.startswith('VmSize'))
    resource.setrlimit(resource.RLIMIT_AS, (mapped * 1024 + CHILD_MEMORY, ) * 2)
    torch.set_num_threads(1)
    figures = {'files': 0, 'failures': 0, 'first_failure': None, 'over': 0,
               'first_over': None, 'most_memory': (0, 0), 'most_cpu': (0, 0)}

    def check(data: bytes) -> None:
        report = measure(data)
        figures['files'] += 1
        if report['error']:
            figures['failures'] += 1
            figures['first_failure'] = figures['first_failure'] or (
                f'{report["error"]} on {data[:200]!r} ({len(data)} bytes)')
            return
        memory, cpu = bound(report)
        figures['most_memory'] = max(figures['most_memory'], (round(memory, 3), len(data)))
        figures['most_cpu'] = max(figures['most_cpu'], (round(cpu, 3), len(data)))
        if memory > 1 or cpu > 1:
            figures['over'] += 1
            figures['first_over'] = figures['first_over'] or f'{report} on {data[:200]!r}'

    for data in largest_attacks(ATTACK_BYTES):
        check(data)

    @settings(max_examples=examples, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(st.one_of(budget_attacks(ATTACK_BYTES), budget_attacks(ATTACK_BYTES),
                     torch_files(), safetensors_files()))
    def read_one(data):
        check(data)

    read_one()
    return figures


@pytest.mark.slow
def test_generated_files_read_within_memory_and_time_proportional_to_their_size():
    examples = CAMPAIGN or 60
    code = ('import json; from tests.checkpoint.test_fuzz import run_batch; '
            f'print(json.dumps(run_batch({examples})))')
    child = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True,
                           text=True, env={**os.environ, 'PYTHONPATH': str(ROOT)},
                           timeout=600 + examples * FILE_SECONDS)
    assert child.returncode == 0, child.stderr[-3000:]
    figures = json.loads(child.stdout.strip().splitlines()[-1])
    print(f'fuzz figures: {figures}')
    assert figures['files'] >= min(examples, 50), figures
    assert figures['failures'] == 0 and figures['over'] == 0, figures
