"""Helpers of the end-to-end demo (``tools/demo/run_demo.py``): checkpoints and loss curves."""
from __future__ import annotations

import glob
import json
import os.path as osp
from collections import defaultdict

from cvt_backbone.checkpoint import CheckpointError, read_checkpoint, unwrap_state_dict
from cvt_backbone.checkpoint.write import atomic_save


def latest_checkpoint(work_dir: str) -> str:
    """The checkpoint MMEngine saved last in ``work_dir`` (from its ``last_checkpoint`` file).

    Raises:
        FileNotFoundError: the run saved no checkpoint.
    """
    marker = osp.join(work_dir, 'last_checkpoint')
    if not osp.isfile(marker):
        raise FileNotFoundError(f'{work_dir} holds no checkpoint (no last_checkpoint file)')
    with open(marker) as f:
        return f.read().strip()


def extract_backbone(src: str, dst: str) -> dict:
    """Write the ``backbone.*`` weights of a whole-model checkpoint as a backbone checkpoint.

    Args:
        src: An mmpretrain / mmdet / mmseg checkpoint.
        dst: Output ``.pth`` with ``{'state_dict': backbone weights, 'meta': {...}}``, written
            atomically.

    Returns:
        The backbone state dict.

    Raises:
        CheckpointError: ``src`` has no ``backbone.`` weights.
    """
    state = unwrap_state_dict(read_checkpoint(src), f'checkpoint {src!r}')
    backbone = {k[len('backbone.'):]: v for k, v in state.items() if k.startswith('backbone.')}
    if not backbone:
        raise CheckpointError(f'checkpoint {src!r} has no backbone.* weights')
    atomic_save({'state_dict': backbone, 'meta': {'source': osp.abspath(src)}}, dst)
    return backbone


def read_losses(work_dir: str) -> dict[str, list[tuple[int, float]]]:
    """Training losses logged by MMEngine in ``work_dir/<timestamp>/vis_data/scalars.json``.

    Returns:
        ``{loss name: [(iteration, value), ...]}`` from the newest run that logged losses.
    """
    for path in sorted(glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json')),
                       reverse=True):
        losses: dict[str, list[tuple[int, float]]] = defaultdict(list)
        with open(path) as f:
            for line in f:
                record = json.loads(line)
                for key, value in record.items():
                    if key.startswith('loss') and 'step' in record:
                        losses[key].append((int(record['step']), float(value)))
        if losses:
            return dict(losses)
    return {}


def plot_losses(losses: dict[str, list[tuple[int, float]]], out_file: str, title: str) -> None:
    """Plot loss curves (total loss bold) to a PNG."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for key in sorted(losses, key=lambda k: k != 'loss'):
        steps, values = zip(*losses[key])
        ax.plot(steps, values, label=key, linewidth=2.5 if key == 'loss' else 1)
    ax.set_xlabel('iteration')
    ax.set_ylabel('loss')
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if losses:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_file, dpi=100)
    plt.close(fig)
