"""Evaluate a checkpoint on a config's test set with MMEngine's Runner.

Examples::

    python tools/test.py CONFIG CHECKPOINT
    python tools/test.py CONFIG CHECKPOINT --show-dir vis --metrics-out metrics.json
    python tools/test.py CONFIG CHECKPOINT --amp     # bfloat16 autocast (docs/usage.md)
    bash tools/dist_test.sh CONFIG CHECKPOINT 8
"""
import argparse
import json
import os

from mmengine.config import DictAction

import cvt_backbone.engine.tool  # noqa: F401  (registers CvT; quiet third-party output)
from cvt_backbone.checkpoint import atomic_write_text, check_local_path
from cvt_backbone.checkpoint import is_url
from cvt_backbone.engine import (CompleteCheckpointHook, ConfigError,
                                 check_data_paths, check_model_config, prepare_config)
from cvt_backbone.engine.amp import AutocastFeaturesHook
from cvt_backbone.engine.config import drop_training
from cvt_backbone.engine.runner import build_runner, load_config, run_tool
from cvt_backbone.engine.visualization import enable_visualization


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Test a CvT model (mmpretrain/mmdet/mmseg)')
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint file, save_pretrained folder or URL')
    parser.add_argument('--work-dir', help='where the evaluation logs go')
    parser.add_argument('--out', help='dump the raw predictions to this pickle file')
    parser.add_argument('--show-dir', help='draw every test image with its predictions into '
                        'this folder (a relative one lies inside the work dir)')
    parser.add_argument('--metrics-out', help='write the evaluation metrics to this JSON file')
    parser.add_argument('--amp', action='store_true',
                        help='backbone and neck under autocast: bfloat16 on the CPU and on GPUs '
                             'that support it, else float16; heads in float32')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def rounded(value: float) -> float:
    """A metric as it means something: 4 significant decimals, no float32 noise."""
    return round(float(value), 4)


def main() -> None:
    args = parse_args()
    if not is_url(args.checkpoint):
        # a file or a save_pretrained folder, as load_from and init_cfg read them
        check_local_path(args.checkpoint, allow_dir=True)
    if args.out and not args.out.endswith(('.pkl', '.pickle')):
        raise ConfigError('--out must name a .pkl file')
    cfg, _ = load_config(args.config, args.cfg_options)
    drop_training(cfg)
    cfg = prepare_config(cfg, args.config, work_dir=args.work_dir, launcher=args.launcher)
    cfg.load_from = args.checkpoint
    if args.show_dir:
        try:
            print(f'Drawing the predictions into {enable_visualization(cfg, args.show_dir)}')
        except ValueError as err:
            raise ConfigError(str(err)) from None
    if args.out:
        evaluator = cfg.test_evaluator
        evaluators = evaluator if isinstance(evaluator, list) else [evaluator]
        cfg.test_evaluator = [*evaluators, dict(type='DumpResults', out_file_path=args.out)]
    check_model_config(cfg)
    check_data_paths(cfg, ('test_dataloader',))

    runner = build_runner(cfg)
    runner.register_hook(CompleteCheckpointHook(args.checkpoint))
    if args.amp:
        runner.register_hook(AutocastFeaturesHook())
    metrics = runner.test()
    if args.metrics_out:
        atomic_write_text(json.dumps({k: rounded(v) for k, v in metrics.items()}, indent=2)
                          + '\n', args.metrics_out)


if __name__ == '__main__':
    run_tool(main)
