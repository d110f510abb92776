"""What ``tools/train.py`` and ``tools/test.py`` do to a config before MMEngine's Runner.

Fill in run-time settings (:func:`prepare_config`, :func:`start_cpu_distributed`), and fail
early and by name on missing data (:func:`check_data_paths`) and on necks or heads that do
not fit a CvT backbone (:func:`check_model_config`).
"""
from __future__ import annotations

import copy
import datetime
import logging
import os.path as osp
from collections.abc import Iterator, Sequence

import torch
from mmengine.config import Config
from mmengine.logging import print_log

from ..models import CvT

#: Where a missing dataset is explained; a config may say more in a ``data_hint`` string.
DATA_HINT = 'Data layouts for COCO, ADE20K and ImageNet: docs/training.md, "Data"'


def prepare_config(cfg: Config, config_path: str, work_dir: str | None = None,
                   launcher: str = 'none', amp: bool = False,
                   original: Config | None = None) -> Config:
    """Fill in the run-time parts of a config.

    * the work dir (``work_dirs/<config name>`` by default);
    * distributed runs without CUDA: the ``gloo`` backend, and DDP without ``device_ids``
      (MMEngine passes the local rank as a CUDA device, which DDP refuses for a CPU model);
    * checkpoints: :class:`~.hooks.SafeCheckpointHook` in place of MMEngine's
      ``CheckpointHook`` (same settings; ``tools/train.py`` adds :class:`~.hooks.RandomStateHook`);
    * training data: the seeded samplers and dataset of :mod:`.data` in place of MMEngine's
      ``DefaultSampler`` / ``InfiniteSampler``, so a resumed run sees the same samples with
      the same augmentations;
    * ``amp``: mixed precision (:func:`enable_amp`);
    * a loop shortened by ``--cfg-options``: its length as the file says it is kept in
      ``schedule_length``, so that the schedulers follow (:func:`fit_schedule`, applied by
      :class:`~.runner.CvTRunner` once the training data's length is known).

    Args:
        cfg: The loaded config.
        config_path: Its file (names the default work dir).
        work_dir: Overrides the config's ``work_dir``.
        launcher: ``'none'``, ``'pytorch'`` (torchrun), ``'slurm'`` or ``'mpi'``.
        amp: Train with automatic mixed precision.
        original: The config as its file says it (before ``--cfg-options``).

    Returns:
        The same config, changed in place.
    """
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
        if str(wrapper.get('type', '')).split('.')[-1] in ('MMDistributedDataParallel',
                                                           'DistributedDataParallel'):
            wrapper['device_ids'] = None
        cfg.model_wrapper_cfg = wrapper
    use_safe_checkpoint_hook(cfg.setdefault('default_hooks', {}))
    if cfg.get('train_dataloader'):
        seed_training_data(cfg.train_dataloader)
    if amp:
        enable_amp(cfg)
    note_schedule_length(cfg, original)
    return cfg


def _type_name(part: object) -> str:
    kind = part.get('type', '') if isinstance(part, dict) else ''
    return kind.__name__ if isinstance(kind, type) else str(kind).split('.')[-1]


def use_safe_checkpoint_hook(default_hooks: dict) -> None:
    """Put :class:`~.hooks.SafeCheckpointHook` in place of MMEngine's ``CheckpointHook`` (the
    one a config names, or the one the Runner adds by default), with the same settings."""
    checkpoint = default_hooks.get('checkpoint') or dict(type='CheckpointHook', interval=1)
    if _type_name(checkpoint) == 'CheckpointHook':
        default_hooks['checkpoint'] = dict(checkpoint, type='SafeCheckpointHook')


#: MMEngine's samplers and their seeded counterparts (:mod:`.data`).
SEEDED_SAMPLERS = {'DefaultSampler': 'SeededDefaultSampler',
                   'InfiniteSampler': 'SeededInfiniteSampler'}


def seed_training_data(loader: dict) -> None:
    """Give a training dataloader config the seeded sampler and dataset of :mod:`.data`.

    Other samplers are left as they are, with a warning: their runs resume with the same
    order only if they are deterministic, and with other augmentations.
    """
    sampler = loader.get('sampler') or {}
    name = _type_name(sampler)
    if name in SEEDED_SAMPLERS:
        loader['sampler'] = dict(sampler, type=SEEDED_SAMPLERS[name])
    elif name not in SEEDED_SAMPLERS.values():
        print_log(f'train_dataloader.sampler is {name or sampler!r}: a resumed run will not '
                  f'see the same augmentations as an uninterrupted one (only '
                  f'{sorted(SEEDED_SAMPLERS)} are seeded per sample)', logger='current',
                  level=logging.WARNING)
        return
    if _type_name(loader.get('dataset')) != 'SeededDataset':
        loader['dataset'] = dict(type='SeededDataset', dataset=loader['dataset'])


def enable_amp(cfg: Config) -> None:
    """Switch a config's optimizer wrapper to mixed precision for this machine.

    CUDA: MMEngine's ``AmpOptimWrapper``, bfloat16 where the GPU supports it, else float16
    with dynamic loss scaling. CPU: :class:`~.optim.CpuAmpOptimWrapper` (bfloat16 autocast,
    no loss scaling). Parameters stay float32 either way.
    """
    optim_wrapper = cfg.setdefault('optim_wrapper', {})
    if _type_name(optim_wrapper) not in ('', 'OptimWrapper'):
        return
    if torch.cuda.is_available():
        optim_wrapper.update(type='AmpOptimWrapper', loss_scale='dynamic',
                             dtype='bfloat16' if torch.cuda.is_bf16_supported() else 'float16')
    else:
        optim_wrapper.update(type='CpuAmpOptimWrapper', dtype='bfloat16')


def _schedule_length(cfg: Config | dict) -> tuple[str, int] | None:
    """``('epoch', max_epochs)`` or ``('iter', max_iters)`` of a config's training loop."""
    loop = cfg.get('train_cfg') or {}
    if 'max_iters' in loop and _type_name(loop) != 'EpochBasedTrainLoop':
        return 'iter', loop['max_iters']
    if 'max_epochs' in loop:
        return 'epoch', loop['max_epochs']
    return None


def note_schedule_length(cfg: Config, original: Config | dict | None) -> None:
    """Record in ``cfg.schedule_length`` the loop length its schedulers were written for,
    when ``--cfg-options`` changed it (``dict(max_epochs=300)``); :func:`fit_schedule`
    reads it when the Runner builds the schedulers."""
    length, first = _schedule_length(cfg), _schedule_length(original or {})
    if length and first and length[0] == first[0] and length[1] != first[1] \
            and 'schedule_length' not in cfg:
        cfg.schedule_length = {f'max_{first[0]}s': first[1]}


#: Scheduler arguments counted in the scheduler's steps (epochs or iterations), besides
#: ``begin`` and ``end``: MMEngine's step, multi-step, cosine, one-cycle and restart schedulers.
STEP_COUNTS = ('T_max', 'step_size', 'total_steps')
STEP_LISTS = ('milestones', 'periods')


def fit_schedule(schedulers: dict | Sequence[dict], epoch_length: int, max_iters: int,
                 written_for: int | None = None) -> tuple[list[dict], str | None]:
    """Fit parameter scheduler configs to a shortened run, keeping their shape.

    Everything is measured in iterations of this run (an epoch-based scheduler's epochs
    count ``epoch_length`` each). When the loop is shorter than the one the schedule was
    written for (``written_for``, e.g. 300 epochs of the file run as 3 with
    ``--cfg-options``), every milestone shrinks by ``max_iters / written_for``: a warm-up of
    5 epochs out of 300 stays 1/60 of the run, and a cosine still ends at its end. Every
    scheduler then steps per iteration (``by_epoch=False``, whole iterations), so that a
    fraction of an epoch is not rounded away as ``convert_to_iter_based`` would (a warm-up of
    0.05 epochs on 3 iterations per epoch is 0 iterations there, and MMEngine stops with
    ``end should be larger than begin``). A milestone that falls inside the first iteration
    becomes the first, for every scheduler alike, so the warm-up and what follows keep their
    order. A scheduler left with a single iteration is left out: MMEngine's linear warm-up
    over one iteration never leaves its start factor (a run of 10 iterations per epoch would
    stay at 1 % of its learning rate), and no other scheduler changes anything in one.

    A schedule that does not fit the run even so (a warm-up of 500 iterations in a run of
    60, a scheduler that begins after the last epoch) would leave the learning rate short of
    its peak or never decayed: that is an error naming the value to set.

    Args:
        schedulers: ``param_scheduler`` of a config (one dict or a list).
        epoch_length: Iterations per epoch of this run (``len(train_dataloader)``).
        max_iters: Iterations of this run.
        written_for: Iterations the schedule was written for, when the loop was shortened.

    Returns:
        The scheduler configs to build, and a log line saying what changed (None if nothing).

    Raises:
        ConfigError: a scheduler does not fit in the run; the message says what to set.
    """
    items = [copy.deepcopy(dict(s)) for s in (
        [schedulers] if isinstance(schedulers, dict) else schedulers)]
    factor = max_iters / written_for if written_for and written_for > max_iters else 1.0

    def at(value: float, unit: int) -> int:
        scaled = value * unit * factor
        return max(round(scaled), 1) if scaled > 0 else 0

    fitted, changes = [], []
    for i, s in enumerate(items):
        unit = epoch_length if s.get('by_epoch', True) else 1
        new = {k: v for k, v in s.items() if k != 'convert_to_iter_based'}
        new.update(by_epoch=False, begin=at(s.get('begin', 0), unit))
        if s.get('end') not in (None, float('inf')):
            new['end'] = at(s['end'], unit)
        for key in STEP_COUNTS:
            if s.get(key) is not None:
                new[key] = max(at(s[key], unit), 1)
        for key in STEP_LISTS:
            if s.get(key) is not None:
                new[key] = [at(v, unit) for v in s[key]]
        where = (f'param_scheduler[{i}] ({s.get("type")}, {_span(s)}) in this run of '
                 f'{max_iters} iterations ({epoch_length} per epoch')
        where += f', shortened by {factor:.4g})' if factor != 1.0 else ')'
        if new.get('end', max_iters) > max_iters:
            raise ConfigError(f'{where} would end at iteration {new["end"]}, after the end of '
                              f'training: set param_scheduler.{i}.end (or train longer)')
        if new['begin'] >= new.get('end', max_iters):
            raise ConfigError(f'{where} would begin at iteration {new["begin"]}, with no '
                              f'iteration left before its end: set param_scheduler.{i}.begin '
                              f'and .end (or train longer)')
        if 'end' in new and new['end'] - new['begin'] == 1:
            changes.append(f"[{i}] {s.get('type')} {_span(s)} left out (one iteration)")
            continue
        fitted.append(new)
        changes.append(f"[{i}] {s.get('type')} {_span(s)} -> {_span(new)}")
    if factor == 1.0:
        return items, None
    return fitted, (f'param_scheduler: the loop is shorter than the {written_for} iterations '
                    f'the schedule was written for: every milestone was scaled by {factor:.4g} '
                    f'to the {max_iters} iterations of this run ({epoch_length} per epoch), each '
                    f'scheduler stepping per iteration ({"; ".join(changes)})')


def _span(scheduler: dict) -> str:
    """``'epochs 0..5'``, ``'iterations 3..9'`` (``end`` defaults to the end of training)."""
    units = 'epochs' if scheduler.get('by_epoch', True) else 'iterations'
    return f"{units} {scheduler.get('begin', 0):g}..{scheduler.get('end', 'end')}"


#: What only training reads: ``tools/test.py`` builds a Runner without them.
TRAINING_PARTS = ('train_dataloader', 'train_cfg', 'optim_wrapper', 'param_scheduler',
                  'auto_scale_lr')


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

    Args:
        cfg: A config prepared by :func:`prepare_config`.
    """
    if (cfg.get('launcher') != 'pytorch' or torch.cuda.is_available()
            or torch.distributed.is_initialized()):
        return
    dist_cfg = dict(cfg.get('env_cfg', {}).get('dist_cfg', {}))
    backend = dist_cfg.pop('backend', 'gloo')
    if dist_cfg.get('timeout') is not None:
        dist_cfg['timeout'] = datetime.timedelta(seconds=dist_cfg['timeout'])
    torch.distributed.init_process_group(backend=backend, **dist_cfg)


def _datasets(cfg: dict) -> Iterator[dict]:
    """Yield every leaf dataset config (through wrappers such as RepeatDataset)."""
    if not isinstance(cfg, dict):
        return
    inner = cfg.get('dataset') or cfg.get('datasets')
    if isinstance(inner, dict):
        yield from _datasets(inner)
    elif isinstance(inner, (list, tuple)):
        for dataset in inner:
            yield from _datasets(dataset)
    else:
        yield cfg


def dataset_paths(dataset: dict) -> list[tuple[str, str]]:
    """The ``(field, path)`` pairs a dataset config reads from disk."""
    root = dataset.get('data_root') or ''
    paths = [('data_root', root)] if root else []
    if dataset.get('ann_file'):
        paths.append(('ann_file', osp.join(root, dataset['ann_file'])))
    prefix = dataset.get('data_prefix')
    if isinstance(prefix, str):
        prefix = {'img': prefix}
    for key, value in (prefix or {}).items():
        if isinstance(value, str) and value:
            paths.append((f'data_prefix.{key}', osp.join(root, value)))
    return paths


def check_data_paths(cfg: Config, loaders: Sequence[str]) -> None:
    """Fail early, naming the path, when a dataset of ``loaders`` points at nothing.

    Raises:
        FileNotFoundError: a data root, annotation file or image folder does not exist.
    """
    for loader in loaders:
        loader_cfg = cfg.get(loader)
        if not loader_cfg:
            continue
        for dataset in _datasets(loader_cfg.get('dataset')):
            for field, path in dataset_paths(dataset):
                if path.startswith(('http://', 'https://', 's3://')) or osp.exists(path):
                    continue
                raise FileNotFoundError(f'{loader}.dataset.{field}: {path!r} does not exist. '
                                        f"{cfg.get('data_hint') or DATA_HINT}.")


class ConfigError(ValueError):
    """Parts of a config that do not fit together; the message names the field to change."""


def _is_cvt(backbone: object) -> bool:
    """Whether a backbone config builds :class:`CvT` (``'CvT'``, ``'mmdet.CvT'`` or the class)."""
    if not isinstance(backbone, dict):
        return False
    kind = backbone.get('type')
    if isinstance(kind, type):
        return issubclass(kind, CvT)
    return isinstance(kind, str) and kind.split('.')[-1] == 'CvT'


def cvt_output_channels(backbone: dict) -> list[int]:
    """Channels of each map a CvT backbone config outputs, in output order.

    The whole backbone config is checked by building it on PyTorch's ``meta`` device (no
    memory, no weights, milliseconds even for CvT-W24); the channels come from
    :meth:`CvT.describe_outputs`.

    Args:
        backbone: ``model.backbone`` of a config, of type CvT.

    Returns:
        The channels of each output.

    Raises:
        ConfigError: the backbone config itself is invalid (unknown arch, bad out_indices...).
    """
    kwargs = {k: v for k, v in backbone.items() if k not in ('type', '_scope_')}
    try:
        with torch.device('meta'):
            CvT(**kwargs)
        outputs = CvT.describe_outputs(kwargs.get('arch', 'cvt-13'), kwargs.get('out_indices'),
                                       kwargs.get('out_type', 'featmap'))
    except (ValueError, TypeError) as err:
        raise ConfigError(f'model.backbone: {err}') from None
    return [output['num_chs'] for output in outputs]


def _describe(backbone: dict, channels: list[int]) -> str:
    return (f"the CvT backbone (arch {backbone.get('arch', 'cvt-13')!r}, out_indices "
            f"{backbone.get('out_indices', 'default')}) outputs {len(channels)} map(s) of "
            f'{channels} channels')


def _check_head(head: dict, field: str, backbone: dict, channels: list[int]) -> None:
    """Check an mmseg decode/auxiliary head: ``in_channels[j]`` vs ``channels[in_index[j]]``."""
    in_index, in_channels = head.get('in_index', -1), head.get('in_channels')
    if in_channels is None:
        return
    indices = list(in_index) if isinstance(in_index, (list, tuple)) else [in_index]
    given = list(in_channels) if isinstance(in_channels, (list, tuple)) else [in_channels]
    bad = [i for i in indices if not isinstance(i, int) or not -len(channels) <= i < len(channels)]
    if bad:
        raise ConfigError(f'{field}.in_index {in_index} is out of range: '
                          f'{_describe(backbone, channels)} (valid: 0..{len(channels) - 1})')
    wanted = [channels[i] for i in indices]
    if given != wanted:
        valid = wanted if isinstance(in_channels, (list, tuple)) else wanted[0]
        raise ConfigError(f'{field}.in_channels is {in_channels} for in_index {in_index}, but '
                          f'{_describe(backbone, channels)}: set {field}.in_channels={valid}')


def check_model_config(cfg: Config | dict) -> None:
    """Check that the parts fed by a CvT backbone expect its channels, before building.

    Checked: an FPN-like ``model.neck`` (list-valued ``in_channels``: one entry per backbone
    output); without a neck, mmseg's ``model.decode_head`` and ``model.auxiliary_head``
    (``in_channels`` against the outputs picked by ``in_index``) and an mmpretrain
    ``model.head`` (``in_channels`` against the last output; a ``GlobalAveragePooling`` neck
    keeps channels). Configs without a CvT backbone pass unchecked.

    Args:
        cfg: A whole config (with ``model``) or a model config.

    Raises:
        ConfigError: a mismatch; the message names the field, the backbone's channels and the
            value to set. Also an invalid backbone config.
    """
    model = cfg.get('model', cfg)
    backbone = model.get('backbone') if isinstance(model, dict) else None
    if not _is_cvt(backbone):
        return
    channels = cvt_output_channels(backbone)
    pretrained = model.get('pretrained')
    if pretrained and backbone.get('init_cfg'):
        raise ConfigError(f'model.pretrained is {pretrained!r} (from the base config?) and '
                          f'model.backbone.init_cfg is set too: mmseg hands model.pretrained to '
                          f'the backbone; set model.pretrained=None')
    neck = model.get('neck')
    first_neck = neck[0] if isinstance(neck, (list, tuple)) and neck else neck
    if isinstance(first_neck, dict) and 'type' not in first_neck:
        field = 'model.neck' if first_neck is neck else 'model.neck[0]'
        raise ConfigError(f'{field} has no type: the base config has no neck there (its '
                          f'heads read the backbone directly), so remove {field} and set the '
                          f"heads' in_channels / in_index instead")
    if isinstance(first_neck, dict) and isinstance(first_neck.get('in_channels'), (list, tuple)):
        field = 'model.neck' if first_neck is neck else 'model.neck[0]'
        if list(first_neck['in_channels']) != channels:
            raise ConfigError(f"{field}.in_channels is {first_neck['in_channels']}, but "
                              f'{_describe(backbone, channels)}: set {field}.in_channels='
                              f'{channels}')
        return
    keeps_channels = first_neck is None or (
        isinstance(first_neck, dict)
        and str(first_neck.get('type', '')).split('.')[-1] == 'GlobalAveragePooling')
    if not keeps_channels:
        return
    for name in ('decode_head', 'auxiliary_head'):
        heads = model.get(name)
        for i, head in enumerate(heads if isinstance(heads, (list, tuple)) else [heads]):
            if isinstance(head, dict):
                field = f'model.{name}' if head is heads else f'model.{name}[{i}]'
                _check_head(head, field, backbone, channels)
    head = model.get('head')
    if isinstance(head, dict) and isinstance(head.get('in_channels'), int) \
            and head['in_channels'] != channels[-1]:
        raise ConfigError(f"model.head.in_channels is {head['in_channels']}, but "
                          f'{_describe(backbone, channels)} (the head reads the last): set '
                          f'model.head.in_channels={channels[-1]}')
