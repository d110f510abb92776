"""Live progress of a demo step, read from the log the tool writes.

The tools log through MMEngine's ``LoggerHook``: every ``interval`` iterations a line like

    ... Epoch(train) [3][ 40/188]  lr: ...  eta: 0:01:10  time: 0.08 ...  loss: 0.4171
    ... Iter(train) [ 220/1000]  lr: ...  eta: 0:03:41  ...  loss: 0.6113  decode.loss_ce: ...
    ... Epoch(test) [ 5/13]    eta: 0:00:03  time: 0.52 ...

:func:`follow` reads the step's log file as it grows and :class:`StepProgress` turns each
such line into one updating tqdm line: the iteration out of the total, the epoch, the loss
and MMEngine's estimate of the time left. Nothing is added to the training itself.
"""
from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass

from tqdm import tqdm

_LINE = re.compile(r'\b(Epoch|Iter)\((train|val|test)\)\s+(?:\[\s*(\d+)\])?\[\s*(\d+)/(\d+)\]')
_ETA = re.compile(r'\beta: (\S+)')
_LOSS = re.compile(r'(?<![\w.])loss: ([-+0-9.eE]+|nan|inf)')
BAR_FORMAT = '{desc}: {percentage:3.0f}%|{bar}| {n}/{total} [{elapsed}{postfix}]'


@dataclass
class LogLine:
    """What one MMEngine progress line says.

    Attributes:
        mode: ``'train'``, ``'val'`` or ``'test'``.
        epoch: The epoch (epoch-based loops), else None.
        step: Iteration within the epoch (epoch-based) or of the run (iteration-based).
        steps: Its total: iterations per epoch, or of the run.
        loss: The logged total loss (training lines), else None.
        eta: MMEngine's estimate of the time left in this loop (``'0:01:10'``), else None.
    """
    mode: str
    epoch: int | None
    step: int
    steps: int
    loss: float | None
    eta: str | None


def parse_log_line(line: str) -> LogLine | None:
    """The progress a log line states, or None for any other line."""
    match = _LINE.search(line)
    if not match:
        return None
    _, mode, epoch, step, steps = match.groups()
    eta, loss = _ETA.search(line), _LOSS.search(line)
    return LogLine(mode, int(epoch) if epoch else None, int(step), int(steps),
                   float(loss.group(1)) if loss else None, eta.group(1) if eta else None)


class StepProgress:
    """One tqdm line for one demo step.

    Training lines move the bar over all training iterations (``max_epochs`` x iterations
    per epoch for epoch-based loops); validation and test lines over their own loop.

    Args:
        label: What the step is (``'classification: train'``).
        max_epochs: The epochs of an epoch-based training loop, None for iteration-based ones
            and for test runs.
        bar: Keyword arguments for tqdm (tests pass a file).
    """

    def __init__(self, label: str, max_epochs: int | None = None, **bar) -> None:
        self.max_epochs = max_epochs
        # Until the first progress line the total is unknown: the tool is starting up.
        self.bar = tqdm(desc=label, total=None, unit='it', dynamic_ncols=True,
                        bar_format='{desc}: starting', **bar)
        self.loss: float | None = None

    def update(self, line: str) -> None:
        """Move the bar to where ``line`` says the run is (other lines are ignored)."""
        progress = parse_log_line(line)
        if progress is None:
            return
        if progress.loss is not None:
            self.loss = progress.loss
        if progress.mode == 'train' and progress.epoch is not None and self.max_epochs:
            total = self.max_epochs * progress.steps
            position = (progress.epoch - 1) * progress.steps + progress.step
            where = f'epoch {progress.epoch}/{self.max_epochs}'
        else:
            total, position = progress.steps, progress.step
            where = {'train': 'iteration', 'val': 'validating', 'test': 'testing'}[progress.mode]
        self.bar.bar_format = BAR_FORMAT
        self.bar.total = total
        self.bar.n = position
        parts = [where]
        if self.loss is not None and progress.mode == 'train':
            parts.append(f'loss {self.loss:.4f}')
        if progress.eta:
            parts.append(f'{progress.eta} left')
        self.bar.set_postfix_str(', '.join(parts), refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


def follow(proc: subprocess.Popen, log_file: str, on_line: Callable[[str], None],
           poll: float = 0.5) -> int:
    """Call ``on_line`` with each complete line written to ``log_file`` while ``proc`` runs.

    Args:
        proc: The process writing the file.
        log_file: The file (it exists: the caller opened it for the process).
        on_line: Called with every line, without its newline.
        poll: Seconds between looks at a file that has not grown.

    Returns:
        The process's exit status.
    """
    pending = ''
    with open(log_file, errors='replace') as f:
        while True:
            chunk = f.read()
            if chunk:
                lines = (pending + chunk).split('\n')
                pending = lines.pop()   # an unfinished line waits for its end
                for line in lines:
                    on_line(line)
                continue
            if proc.poll() is not None:
                rest = pending + f.read()
                for line in filter(None, rest.split('\n')):
                    on_line(line)
                return proc.returncode
            time.sleep(poll)
