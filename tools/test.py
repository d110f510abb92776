"""Evaluate a checkpoint on a config's test set with MMEngine's Runner.

Examples::

    python tools/test.py CONFIG CHECKPOINT
    python tools/test.py CONFIG CHECKPOINT --show-dir vis --out results.pkl
    bash tools/dist_test.sh CONFIG CHECKPOINT 8
"""
import argparse
import json
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmengine.config import Config, DictAction  # noqa: E402
from mmengine.registry import RUNNERS  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

import cvt_backbone  # noqa: E402,F401  (registers CvT, safe checkpoint loading)
from cvt_backbone.checkpoint import CheckpointError, check_checkpoint_path  # noqa: E402
from cvt_backbone.training import (CompleteCheckpointHook, ConfigError,  # noqa: E402
                                   check_data_paths, check_model_config, prepare_config,
                                   start_cpu_distributed)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Test a CvT model (mmpretrain/mmdet/mmseg)')
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='where the evaluation logs go')
    parser.add_argument('--out', help='dump the raw predictions to this pickle file')
    parser.add_argument('--show-dir', help='write visualised predictions to this folder '
                        '(inside the work dir)')
    parser.add_argument('--metrics-out', help='write the evaluation metrics to this JSON file')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def enable_visualization(cfg: Config, show_dir: str) -> None:
    """Switch on the toolbox's visualization hook.

    A relative ``show_dir`` lies inside the run's work dir (mmdet: inside its timestamped
    log folder, as mmdet's own test tool does).
    """
    hook = cfg.default_hooks.get('visualization')
    if hook is None:
        raise ValueError('--show-dir needs a visualization hook in default_hooks; the config '
                         'has none')
    scope = cfg.get('default_scope')
    if scope == 'mmdet':
        hook.update(draw=True, test_out_dir=show_dir)
        return
    out_dir = osp.join(cfg.work_dir, show_dir)
    if scope == 'mmpretrain':
        hook.update(enable=True, out_dir=out_dir)
    else:
        hook.update(draw=True, interval=1)
        cfg.visualizer['save_dir'] = out_dir
        cfg.visualizer['vis_backends'] = [dict(type='LocalVisBackend')]


def main() -> None:
    args = parse_args()
    if not osp.isfile(args.config):
        sys.exit(f'error: config file {args.config!r} does not exist')
    check_checkpoint_path(args.checkpoint)
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    cfg = prepare_config(cfg, args.config, work_dir=args.work_dir, launcher=args.launcher)
    cfg.load_from = args.checkpoint
    if args.show_dir:
        enable_visualization(cfg, args.show_dir)
    if args.out:
        if not args.out.endswith(('.pkl', '.pickle')):
            sys.exit('error: --out must be a .pkl file')
        evaluator = cfg.test_evaluator
        evaluators = evaluator if isinstance(evaluator, list) else [evaluator]
        cfg.test_evaluator = [*evaluators, dict(type='DumpResults', out_file_path=args.out)]
    check_model_config(cfg)
    check_data_paths(cfg, ('test_dataloader',))

    start_cpu_distributed(cfg)
    runner = RUNNERS.build(cfg) if 'runner_type' in cfg else Runner.from_cfg(cfg)
    runner.register_hook(CompleteCheckpointHook(args.checkpoint))
    metrics = runner.test()
    if args.metrics_out:
        with open(args.metrics_out, 'w') as f:
            json.dump({k: float(v) for k, v in metrics.items()}, f, indent=2)


if __name__ == '__main__':
    try:
        main()
    except (CheckpointError, ConfigError, FileNotFoundError) as err:
        sys.exit(f'error: {err}')
