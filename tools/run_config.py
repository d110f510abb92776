"""What ``tools/train.py`` and ``tools/test.py`` do to a config before MMEngine's Runner.

* :func:`check_cfg_options`: every ``--cfg-options`` key must name something the config has
  or a field its part takes (a typo such as ``train_cfg.max_epoch`` is named);
* :func:`prepare_config`: the work dir, distributed runs on machines without CUDA,
  ``--amp`` and ``--auto-scale-lr``;
* :func:`drop_training`: a test run builds nothing of training;
* :func:`start_cpu_distributed`: torchrun on a machine without CUDA;
* :class:`QuietRunLog`: the run's log without MMEngine's lines that are no user's business.
"""
from __future__ import annotations

import datetime
import logging
import os
import os.path as osp
import re
from collections.abc import Mapping

import torch
from mmengine.config import Config

from cvt_backbone import ConfigError

#: What only training reads: ``tools/test.py`` builds a Runner without them.
TRAINING_PARTS = ('train_dataloader', 'train_cfg', 'optim_wrapper', 'param_scheduler',
                  'auto_scale_lr')
#: Parts the Runner passes on as keyword arguments, without a ``type`` in the config: the
#: loops, ``set_randomness``, the optimizer wrapper, the dataloaders, ``init_dist``, the log
#: processor. MMEngine names an argument they do not take when it builds them.
KEYWORD_PARTS = ('train_cfg', 'val_cfg', 'test_cfg', 'randomness', 'optim_wrapper',
                 'train_dataloader', 'val_dataloader', 'test_dataloader', 'env_cfg.dist_cfg',
                 'log_processor')
#: The launchers and the environment variables each needs (set by torchrun, srun, mpirun).
LAUNCHER_ENV = {'pytorch': ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT'),
                'slurm': ('SLURM_PROCID', 'SLURM_NTASKS', 'SLURM_NODELIST'),
                'mpi': ('OMPI_COMM_WORLD_RANK', 'OMPI_COMM_WORLD_SIZE')}


def _type_name(part: object) -> str:
    kind = part.get('type', '') if isinstance(part, Mapping) else ''
    return kind.__name__ if isinstance(kind, type) else str(kind).split('.')[-1]


def check_cfg_options(cfg: Config, options: Mapping | None) -> None:
    """Refuse ``--cfg-options`` keys that name nothing in the config.

    A key is accepted when the config has it, when it adds a top-level entry
    (``load_from=...``), or when its parent is a part of the config that has a ``type`` or
    that the Runner passes on as keyword arguments (:data:`KEYWORD_PARTS`: an argument the
    config leaves at its default, such as ``train_cfg.val_begin``; MMEngine checks those
    when it builds the part, and :func:`explain_option_error` names the option then).

    Raises:
        ConfigError: the first key whose parent does not exist or is no part of the config;
            the message lists the keys there are.
    """
    for key in options or {}:
        node: object = cfg
        parts = key.split('.')
        for depth, name in enumerate(parts):
            if isinstance(node, (list, tuple)) and name.isdigit() and int(name) < len(node):
                node = node[int(name)]
                continue
            if isinstance(node, (Mapping, Config)) and name in node:
                node = node[name]
                continue
            parent = '.'.join(parts[:depth]) or 'the config'
            if depth == 0 or (isinstance(node, Mapping) and depth == len(parts) - 1
                              and ('type' in node or parent in KEYWORD_PARTS)):
                break  # a new top-level entry, or an argument of a part MMEngine builds
            there = sorted(node) if isinstance(node, Mapping) else type(node).__name__
            raise ConfigError(f'--cfg-options {key}: {parent} has no {name!r} (it has: '
                              f'{there})')


def explain_option_error(err: Exception, options: Mapping | None) -> Exception:
    """A ``ConfigError`` naming the ``--cfg-options`` key behind a build error, if one is.

    MMEngine reports an argument a part does not take (``max_epoch`` of
    ``EpochBasedTrainLoop``) as a ``TypeError`` when it builds the part; when that argument
    came from ``--cfg-options``, the key is named with MMEngine's message.

    Returns:
        The ``ConfigError``, or ``err`` itself.
    """
    message = ' '.join(str(err).split())
    for key in options or {}:
        if isinstance(err, TypeError) and f"'{key.split('.')[-1]}'" in message:
            return ConfigError(f'--cfg-options {key}: {message}')
    return err


def check_launcher(launcher: str) -> None:
    """Refuse a distributed launcher outside the launcher that sets it up.

    Raises:
        ConfigError: ``--launcher pytorch`` without torchrun's environment (and likewise
            for slurm and mpi); the message says what to run instead.
    """
    missing = [name for name in LAUNCHER_ENV.get(launcher, ()) if name not in os.environ]
    if missing:
        starter = {'pytorch': 'torchrun (tools/dist_train.sh, tools/dist_test.sh)',
                   'slurm': 'srun (tools/slurm_train.sh, tools/slurm_test.sh)',
                   'mpi': 'mpirun'}[launcher]
        raise ConfigError(f'--launcher {launcher} needs the environment {starter} sets '
                          f'({", ".join(missing)} missing): start the tool through it, or '
                          f'leave --launcher out for one process')


def prepare_config(cfg: Config, config_path: str, work_dir: str | None = None,
                   launcher: str = 'none', amp: bool = False,
                   auto_scale_lr: bool = False) -> Config:
    """Fill in the run-time parts of a config.

    * the work dir (``work_dirs/<config name>`` by default);
    * distributed runs without CUDA: the ``gloo`` backend, and DDP without ``device_ids``
      (MMEngine passes the local rank as a CUDA device, which DDP refuses for a CPU model);
    * ``amp``: mixed precision for this machine (:func:`enable_amp`);
    * ``auto_scale_lr``: scale the learning rate with the total batch, as the config's
      ``auto_scale_lr.base_batch_size`` says (mmdet's ``--auto-scale-lr``).

    Args:
        cfg: The loaded config.
        config_path: Its file (names the default work dir).
        work_dir: Overrides the config's ``work_dir``.
        launcher: ``'none'``, ``'pytorch'`` (torchrun), ``'slurm'`` or ``'mpi'``.
        amp: Train with automatic mixed precision.
        auto_scale_lr: Turn on the config's ``auto_scale_lr``.

    Returns:
        The same config, changed in place.

    Raises:
        ConfigError: ``auto_scale_lr`` for a config without ``auto_scale_lr.base_batch_size``;
            a launcher without its environment.
    """
    check_launcher(launcher)
    cfg.launcher = launcher
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('work_dirs', osp.splitext(osp.basename(config_path))[0])
    if launcher != 'none' and not torch.cuda.is_available():
        cfg.setdefault('env_cfg', {}).setdefault('dist_cfg', {})['backend'] = 'gloo'
        wrapper = cfg.get('model_wrapper_cfg') or dict(
            type='MMDistributedDataParallel', broadcast_buffers=False,
            find_unused_parameters=cfg.get('find_unused_parameters', False))
        if _type_name(wrapper) in ('MMDistributedDataParallel', 'DistributedDataParallel'):
            wrapper['device_ids'] = None
        cfg.model_wrapper_cfg = wrapper
    if amp:
        enable_amp(cfg)
    if auto_scale_lr:
        if not isinstance(cfg.get('auto_scale_lr'), Mapping) \
                or 'base_batch_size' not in cfg.auto_scale_lr:
            raise ConfigError(f'--auto-scale-lr: {config_path} has no auto_scale_lr.'
                              f'base_batch_size, the total batch its learning rate is for')
        cfg.auto_scale_lr.enable = True
    return cfg


def enable_amp(cfg: Config) -> None:
    """Switch a config's optimizer wrapper to mixed precision for this machine.

    CUDA: MMEngine's ``AmpOptimWrapper``, bfloat16 where the GPU supports it, else float16
    with dynamic loss scaling. CPU: ``CpuAmpOptimWrapper`` (bfloat16 autocast on the
    backbone and neck, no loss scaling). Parameters stay float32 either way.
    """
    optim_wrapper = cfg.setdefault('optim_wrapper', {})
    if _type_name(optim_wrapper) not in ('', 'OptimWrapper'):
        return
    if torch.cuda.is_available():
        optim_wrapper.update(type='AmpOptimWrapper', loss_scale='dynamic',
                             dtype='bfloat16' if torch.cuda.is_bf16_supported() else 'float16')
    else:
        optim_wrapper.update(type='CpuAmpOptimWrapper', dtype='bfloat16')


def drop_training(cfg: Config) -> None:
    """Remove the training parts of a config (:data:`TRAINING_PARTS`; ``resume`` off).

    A Runner that has a training loop builds it, and with it the training dataset, as soon
    as anything asks for the current iteration (mmseg's visualization and MMEngine's log
    processor do, while testing): testing would then need the training data.
    """
    for key in TRAINING_PARTS:
        if key in cfg:
            cfg[key] = None
    cfg.resume = False


def start_cpu_distributed(cfg: Config) -> None:
    """Start ``torch.distributed`` for a torchrun launch on a machine without CUDA.

    MMEngine 0.10.7's ``init_dist`` for the ``pytorch`` launcher calls
    ``torch.cuda.set_device`` first, which fails without CUDA; its Runner skips ``init_dist``
    when a process group already exists, so this starts one (with the config's
    ``env_cfg.dist_cfg``, ``gloo`` after :func:`prepare_config`). Does nothing otherwise.
    """
    if (cfg.get('launcher') != 'pytorch' or torch.cuda.is_available()
            or torch.distributed.is_initialized()):
        return
    dist_cfg = dict(cfg.get('env_cfg', {}).get('dist_cfg', {}))
    backend = dist_cfg.pop('backend', 'gloo')
    if dist_cfg.get('timeout') is not None:
        dist_cfg['timeout'] = datetime.timedelta(seconds=dist_cfg['timeout'])
    torch.distributed.init_process_group(backend=backend, **dist_cfg)


class QuietRunLog(logging.Filter):
    """Drop the log records of a run that say nothing a user can act on: MMEngine's line per
    parameter of a ``paramwise_cfg`` (``paramwise_options -- ...``, 79 for the demo
    classifier) and its notes on its own deprecated internals (``FileClient``,
    ``HardDiskBackend``)."""

    DROPPED = re.compile(r'^(paramwise_options -- |"FileClient" will be deprecated|'
                         r'"HardDiskBackend" is the alias of "LocalBackend")')

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.DROPPED.search(record.getMessage())
