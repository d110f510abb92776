"""Evaluate a checkpoint on a config's test set with MMEngine's Runner.

Examples::

    python tools/test.py CONFIG CHECKPOINT
    python tools/test.py CONFIG CHECKPOINT --show-dir vis --metrics-out metrics.json
    python tools/test.py CONFIG CHECKPOINT --amp     # bfloat16 autocast (docs/usage.md)
    bash tools/dist_test.sh CONFIG CHECKPOINT 8

CHECKPOINT is a file, a ``save_pretrained`` folder, a URL or a hub repository id, read by
the package's decoder; it must fill the config's model (the missing keys are named).
``--show-dir DIR`` draws every test image into DIR (inside the work dir when relative), each
named after its path relative to the dataset's image folder.
"""
import argparse
import json
import os

from mmengine.config import DictAction
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from config_checks import check_data_paths, check_model_config
from cvt_backbone import ConfigError
from cvt_backbone.apis import config_scope, load_config
from cvt_backbone.checkpoint import check_local_path, is_hub_id, is_url
from cvt_backbone.checkpoint.write import atomic_write_text
from cvt_backbone.errors import run_main
from cvt_backbone.training import AutocastFeaturesHook, CompleteCheckpointHook, use_safe_loading
from run_config import (
    QuietRunLog,
    check_cfg_options,
    drop_training,
    explain_option_error,
    prepare_config,
    start_cpu_distributed,
)
from show_dir import enable_visualization
from work_dir import check_output_dir


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Test a CvT model (mmpretrain/mmdet/mmseg)')
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint file, save_pretrained folder, URL or '
                        'hub repository id')
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
    if not is_url(args.checkpoint) and not is_hub_id(args.checkpoint):
        check_local_path(args.checkpoint, allow_dir=True)
    if args.out and not args.out.endswith(('.pkl', '.pickle')):
        raise ConfigError('--out must name a .pkl file')
    cfg = load_config(args.config)
    check_cfg_options(cfg, args.cfg_options)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    config_scope(cfg, args.config)
    drop_training(cfg)
    prepare_config(cfg, args.config, work_dir=args.work_dir, launcher=args.launcher)
    cfg.load_from = args.checkpoint
    check_output_dir(cfg.work_dir, 'work dir')
    if args.show_dir:
        show_dir = enable_visualization(cfg, args.show_dir)
        check_output_dir(show_dir, '--show-dir')
        print(f'Drawing the predictions into {show_dir}')
    if args.out:
        evaluator = cfg.test_evaluator
        evaluators = evaluator if isinstance(evaluator, list) else [evaluator]
        cfg.test_evaluator = [*evaluators, dict(type='DumpResults', out_file_path=args.out)]
    check_model_config(cfg)
    check_data_paths(cfg, ('test_dataloader',))
    use_safe_loading()
    start_cpu_distributed(cfg)
    try:
        runner = RUNNERS.build(cfg) if 'runner_type' in cfg else Runner.from_cfg(cfg)
        runner.logger.addFilter(QuietRunLog())
        runner.register_hook(CompleteCheckpointHook(args.checkpoint))
        if args.amp:
            runner.register_hook(AutocastFeaturesHook())
        metrics = runner.test()
    except Exception as err:  # noqa: BLE001 -- an option MMEngine refused is named
        raise explain_option_error(err, args.cfg_options) from None
    if args.metrics_out:
        atomic_write_text(json.dumps({k: rounded(v) for k, v in metrics.items()}, indent=2)
                          + '\n', args.metrics_out)


if __name__ == '__main__':
    run_main(main)
