"""Train a model from an mmpretrain, mmdet or mmseg config with MMEngine's Runner.

The config's ``default_scope`` picks the toolbox. Examples::

    python tools/train.py configs/demo/cvt-tiny_shapes-cls.py
    python tools/train.py configs/mask_rcnn/mask-rcnn_cvt-13_fpn_1x_coco.py --amp
    python tools/train.py CONFIG --resume          # continue from the work dir's latest
    bash tools/dist_train.sh CONFIG 8              # torchrun, one process per GPU
    bash tools/slurm_train.sh PARTITION JOB CONFIG WORK_DIR
"""
import argparse
import os

from mmengine.config import DictAction

import cvt_backbone.engine.tool  # noqa: F401  (registers CvT; quiet third-party output)
from cvt_backbone.engine import (CompleteCheckpointHook, check_data_paths, check_model_config,
                                 prepare_config)
from cvt_backbone.engine.resume import resolve_resume
from cvt_backbone.engine.runner import build_runner, load_config, run_tool


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train a CvT model (mmpretrain/mmdet/mmseg)')
    parser.add_argument('config', help='config file')
    parser.add_argument('--work-dir', help='where logs and checkpoints go '
                        '(default: work_dirs/<config name>)')
    parser.add_argument('--resume', nargs='?', const='auto', default=None,
                        help='resume from a checkpoint; without a path, from the latest one '
                        'in the work dir')
    parser.add_argument('--amp', action='store_true', help='mixed-precision training '
                        '(CUDA: bfloat16 or float16 with loss scaling; CPU: bfloat16)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries, e.g. train_cfg.max_epochs=2')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher for distributed training')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def main() -> None:
    args = parse_args()
    cfg, original = load_config(args.config, args.cfg_options)
    cfg = prepare_config(cfg, args.config, work_dir=args.work_dir, launcher=args.launcher,
                         amp=args.amp, original=original)
    resolve_resume(cfg, args.resume)
    check_model_config(cfg)
    check_data_paths(cfg, ('train_dataloader', 'val_dataloader'))

    runner = build_runner(cfg)
    if cfg.get('resume') and cfg.get('load_from'):
        runner.register_hook(CompleteCheckpointHook(cfg.load_from, training_state=True))
    runner.train()


if __name__ == '__main__':
    run_tool(main)
