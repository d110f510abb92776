"""Measurements the benchmark takes inside one process: memory, matmul rate, latency."""
from __future__ import annotations

import resource
import statistics
import time
from collections.abc import Callable

import torch


class HostMemory:
    """Resident memory of this process (Linux ``/proc/self/status``), with a resettable peak.

    ``VmHWM`` is the peak resident set size; writing ``5`` to ``/proc/self/clear_refs``
    resets it to the current size (and ``getrusage``'s ``ru_maxrss`` with it), so the peak
    of one phase can be told apart from the peak of the whole process.
    """

    name = 'peak RSS'

    def __init__(self) -> None:
        self._earlier_peak = 0
        self.baseline = 0

    @staticmethod
    def _status(field: str) -> int:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith(field + ':'):
                    return int(line.split()[1]) * 1024
        raise RuntimeError(f'{field} is missing from /proc/self/status')

    def peak(self) -> int:
        """Peak resident bytes since the last :meth:`start`, or since the process started."""
        try:
            return self._status('VmHWM')
        except (OSError, RuntimeError):
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def start(self) -> None:
        """Take the current resident size as the baseline and restart the peak from it."""
        self._earlier_peak = self.peak()
        try:
            with open('/proc/self/clear_refs', 'w') as f:
                f.write('5')
        except OSError:
            pass  # the peak then also covers what ran before; the process peak stays right
        self.baseline = self._status('VmRSS')

    def increase(self) -> int:
        """Peak bytes above the baseline since :meth:`start`."""
        return max(0, self.peak() - self.baseline)

    def process_peak(self) -> int:
        """Peak resident bytes of the whole process (imports and model building included)."""
        return max(self._earlier_peak, self.peak())


class CudaMemory:
    """Allocated CUDA memory of this process (``torch.cuda.max_memory_allocated``)."""

    name = 'peak CUDA memory'

    def __init__(self) -> None:
        self.baseline = 0

    def start(self) -> None:
        """Take the allocated bytes as the baseline and restart the peak from it."""
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        self.baseline = torch.cuda.memory_allocated()

    def increase(self) -> int:
        """Peak allocated bytes above the baseline since :meth:`start`."""
        return max(0, torch.cuda.max_memory_allocated() - self.baseline)

    def process_peak(self) -> int:
        """Peak allocated bytes since :meth:`start` (the model's weights included)."""
        return torch.cuda.max_memory_allocated()


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on the CPU)."""
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def matmul_rate(size: int, device: torch.device, dtype: torch.dtype = torch.float32,
                repeats: int = 5) -> float:
    """Rate of a ``size^3`` matrix product on ``device``, in GFLOP/s (2 FLOPs per MAC).

    The median of ``repeats`` timed products after one warm-up, so that on a shared machine
    the rate sees the same competition for the cores as the median latency it is compared
    with.

    Args:
        size: Side of the square matrices.
        device: Where to run.
        dtype: Element type.
        repeats: Timed products.

    Returns:
        GFLOP/s.
    """
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    torch.mm(a, b)
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        synchronize(device)
        times.append(time.perf_counter() - start)
    return 2 * size ** 3 / statistics.median(times) / 1e9


def time_runs(step: Callable[[], object], warmup: int, repeats: int, device: torch.device,
              report: Callable[[str], None]) -> list[float]:
    """Run ``step`` ``warmup`` times untimed, then ``repeats`` times timed.

    Args:
        step: The work to time.
        warmup: Untimed runs first.
        repeats: Timed runs.
        device: The device to synchronise before reading the clock.
        report: Receives a progress line after every run.

    Returns:
        Seconds of each timed run.
    """
    times = []
    for i in range(warmup + repeats):
        start = time.perf_counter()
        step()
        synchronize(device)
        elapsed = time.perf_counter() - start
        if i < warmup:
            report(f'warm-up {i + 1}/{warmup}: {elapsed:.2f} s')
        else:
            times.append(elapsed)
            report(f'run {len(times)}/{repeats}: {elapsed:.2f} s')
    return times
