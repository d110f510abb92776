"""What ``tools/train.py`` and ``tools/test.py`` do to a config before MMEngine's Runner.

Fill in run-time settings (:func:`prepare_config`, :func:`start_cpu_distributed`), and fail
early and by name on missing data (:func:`check_data_paths`) and on necks or heads that do
not fit a CvT backbone (:func:`check_model_config`).
"""
from __future__ import annotations

import datetime
import logging
import os.path as osp
from collections.abc import Iterator, Sequence

import torch
from mmengine.config import Config
from mmengine.logging import print_log

from ..models import CvT

#: Where a missing dataset is explained; a config may say more in a ``data_hint`` string.
DATA_HINT = ('Data layouts for COCO, ADE20K and ImageNet: "Training and testing on real data" '
             'in README.md')


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
    * a loop shortened by ``--cfg-options``: the schedulers follow (:func:`fit_schedule`).

    Args:
        cfg: The loaded config.
        config_path: Its file (names the default work dir).
        work_dir: Overrides the config's ``work_dir``.
        launcher: ``'none'``, ``'pytorch'`` (torchrun), ``'slurm'`` or ``'mpi'``.
        amp: Train with automatic mixed precision.
        original: The config as its file says it (before ``--cfg-options``).

    Returns:
        The same config, changed in place.

    Raises:
        ConfigError: the schedule does not fit a shortened loop (see :func:`fit_schedule`).
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
    shortened = fit_schedule(cfg, original)
    if shortened:
        print_log(shortened, logger='current', level=logging.WARNING)
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


def fit_schedule(cfg: Config, original: Config | dict | None = None) -> str | None:
    """Shorten the parameter schedulers to a shortened training loop, or say what to set.

    A warm-up that ends at epoch 5 leaves nothing to a run of 3 epochs: MMEngine then stops
    with ``end should be larger than begin``; a cosine that ends at epoch 12 never finishes
    in a run of 6. When a scheduler would begin at or after the end of training, or end
    after it, every scheduler's milestones shrink by one factor: the loop's length
    over the length in ``original`` (the config before ``--cfg-options``), so the warm-up
    keeps its share of the run; when the file itself sets the short loop, so that the last
    scheduler begins halfway. Epoch milestones may become fractional only for schedulers
    that are converted to iterations (``convert_to_iter_based``).

    Args:
        cfg: The config to run (changed in place).
        original: The config as its file says it.

    Returns:
        A log line saying what was shortened, or None when nothing had to change.

    Raises:
        ConfigError: the schedule cannot be fitted; the message says what to set.
    """
    length, first = _schedule_length(cfg), _schedule_length(original or {})
    schedulers = cfg.get('param_scheduler')
    if not length or not schedulers:
        return None
    units, total = length
    field = f'train_cfg.max_{units}s={total}'
    items = schedulers if isinstance(schedulers, (list, tuple)) else [schedulers]
    same_units = [(i, s) for i, s in enumerate(items) if isinstance(s, dict)
                  and bool(s.get('by_epoch', True)) == (units == 'epoch')]
    late = [(i, s) for i, s in same_units if s.get('begin', 0) >= total]
    if not late and not any(s.get('end', total) > total for _, s in same_units):
        return None
    if first and first[0] == units and first[1] > total:
        scale, reason = total / first[1], f'shorter than the {first[1]} of the config'
    else:
        last = max(max(s.get('begin', 0), s.get('end', 0)) for _, s in same_units)
        scale = total / (2 * max(s.get('begin', 0) for _, s in late)) if late else total / last
        reason = 'too short for its schedulers'
    changes = []
    for i, s in same_units:
        fractional = units == 'epoch' and s.get('convert_to_iter_based', False)
        for key in ('begin', 'end'):
            if key in s:
                new = s[key] * scale if fractional else max(round(s[key] * scale), 1 if
                                                            key == 'end' else 0)
                if new != s[key]:
                    changes.append(f'param_scheduler[{i}].{key} {s[key]} -> {new:.4g}')
                    s[key] = new
        if s.get('begin', 0) >= s.get('end', total) or s.get('begin', 0) >= total:
            raise ConfigError(
                f'{field} is too short for param_scheduler[{i}] ({s.get("type")}) in whole '
                f'{units}s: set param_scheduler.{i}.begin and .end as well, or convert it to '
                f'iterations (convert_to_iter_based=True)')
    return f'{field} is {reason}: the schedule was shortened to fit ({"; ".join(changes)})'


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
