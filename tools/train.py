"""Train a model from an mmpretrain, mmdet or mmseg config with MMEngine's Runner.

The config's ``default_scope`` picks the toolbox. Examples::

    python tools/train.py configs/demo/cvt-tiny_shapes-cls.py
    python tools/train.py configs/mask_rcnn/mask-rcnn_cvt-13_fpn_1x_coco.py --amp
    python tools/train.py CONFIG --resume          # continue from the work dir's latest
    bash tools/dist_train.sh CONFIG 8              # torchrun, one process per GPU
    bash tools/slurm_train.sh PARTITION JOB CONFIG WORK_DIR

Beyond the Runner the config describes, this tool reads every checkpoint through the
package's decoder, holds the work dir (a second run into it is refused), checks the model's
necks and heads and the data paths before building anything, refuses a resume checkpoint
that does not fill the model, and fits the parameter schedules to a loop that
``--cfg-options`` shortened (docs/training.md).
"""
import argparse
import copy
import os

from mmengine.config import DictAction
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from config_checks import check_data_paths, check_model_config
from cvt_backbone.apis import config_scope, load_config
from cvt_backbone.errors import run_main
from cvt_backbone.training import CompleteCheckpointHook, use_safe_loading
from run_config import (
    QuietRunLog,
    check_cfg_options,
    explain_option_error,
    prepare_config,
    start_cpu_distributed,
)
from schedule_fitting import fit_runner_schedule, shortened_from
from work_dir import WorkDirLock, check_output_dir, resolve_resume


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
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the learning rate with the total batch size, as the '
                        "config's auto_scale_lr.base_batch_size says")
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries, e.g. train_cfg.max_epochs=2')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher for distributed training')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def first_process() -> bool:
    """Whether this is the first process of its job (or the only one)."""
    return os.environ.get('RANK', os.environ.get('SLURM_PROCID', '0')) == '0'


def main() -> None:
    args = parse_args()
    cfg = load_config(args.config)
    written = copy.deepcopy(cfg)
    check_cfg_options(cfg, args.cfg_options)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    config_scope(cfg, args.config)
    prepare_config(cfg, args.config, work_dir=args.work_dir, launcher=args.launcher,
                   amp=args.amp, auto_scale_lr=args.auto_scale_lr)
    check_output_dir(cfg.work_dir, 'work dir')
    use_safe_loading()
    lock = WorkDirLock(cfg.work_dir) if first_process() else None
    resolve_resume(cfg, args.resume)
    check_model_config(cfg)
    check_data_paths(cfg, ('train_dataloader', 'val_dataloader'))
    start_cpu_distributed(cfg)
    try:
        runner = RUNNERS.build(cfg) if 'runner_type' in cfg else Runner.from_cfg(cfg)
        runner.logger.addFilter(QuietRunLog())
        if cfg.get('resume') and cfg.get('load_from'):
            runner.register_hook(CompleteCheckpointHook(cfg.load_from, training_state=True))
        shortened = shortened_from(cfg, written)
        if shortened:
            fit_runner_schedule(runner, shortened)
        runner.train()
    except Exception as err:  # noqa: BLE001 -- an option MMEngine refused is named
        raise explain_option_error(err, args.cfg_options) from None
    if lock:
        lock.release()


if __name__ == '__main__':
    run_main(main)
