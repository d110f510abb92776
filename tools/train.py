"""Train a model from an mmpretrain, mmdet or mmseg config with MMEngine's Runner.

The config's ``default_scope`` picks the toolbox. Examples::

    python tools/train.py configs/demo/cvt-tiny_shapes-cls.py
    python tools/train.py configs/mask_rcnn/mask-rcnn_cvt-13_fpn_1x_coco.py --amp
    bash tools/dist_train.sh CONFIG 8            # torchrun, one process per GPU
    bash tools/slurm_train.sh PARTITION JOB CONFIG WORK_DIR
"""
import argparse
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
    parser = argparse.ArgumentParser(description='Train a CvT model (mmpretrain/mmdet/mmseg)')
    parser.add_argument('config', help='config file')
    parser.add_argument('--work-dir', help='where logs and checkpoints go '
                        '(default: work_dirs/<config name>)')
    parser.add_argument('--resume', nargs='?', const='auto', default=None,
                        help='resume from a checkpoint; without a path, from the latest one '
                        'in the work dir')
    parser.add_argument('--amp', action='store_true', help='mixed-precision training')
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
    if not osp.isfile(args.config):
        sys.exit(f'error: config file {args.config!r} does not exist')
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    cfg = prepare_config(cfg, args.config, work_dir=args.work_dir, launcher=args.launcher,
                         amp=args.amp)
    if args.resume == 'auto':
        cfg.resume, cfg.load_from = True, None
    elif args.resume is not None:
        cfg.resume, cfg.load_from = True, args.resume
    if cfg.get('load_from') and '://' not in cfg.load_from:
        check_checkpoint_path(cfg.load_from)
    check_model_config(cfg)
    check_data_paths(cfg, ('train_dataloader', 'val_dataloader'))

    start_cpu_distributed(cfg)
    runner = RUNNERS.build(cfg) if 'runner_type' in cfg else Runner.from_cfg(cfg)
    if cfg.get('resume'):
        runner.register_hook(CompleteCheckpointHook(cfg.load_from, training_state=True))
    runner.train()


if __name__ == '__main__':
    try:
        main()
    except (CheckpointError, ConfigError, FileNotFoundError) as err:
        sys.exit(f'error: {err}')
