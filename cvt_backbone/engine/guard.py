"""Where MMEngine reads and writes checkpoints, this package's reader and writer take over.

Importing this module (``import cvt_backbone.engine`` does; ``import cvt_backbone`` does
not) makes these changes to MMEngine, for every toolbox in the process:

* **Every checkpoint scheme** of ``mmengine.runner.CheckpointLoader`` (local paths,
  ``http(s)://``, ``torchvision://`` / ``modelzoo://``, ``open-mmlab://`` /
  ``openmmlab://``, ``mmcls://``, ``s3://`` / ``petrel://``, ``pavi://``) reads through
  :func:`~cvt_backbone.checkpoint.read.read_checkpoint`, which runs no code; local files that
  a scheme resolves to are read the same way. ``init_cfg``, ``load_from``, ``--resume``,
  ``load_checkpoint`` and the inferencers all load through these.
* **Checkpoint-borne strings that MMEngine acts on are made harmless**
  (:func:`sanitize_checkpoint`): the config text it would run as Python is removed, and
  the checkpoint paths it would delete are kept only when they name a checkpoint beside the
  one being read.
* **Inferencers need the caller's config**: MMEngine's ``BaseInferencer`` (mmdet's
  ``DetInferencer``, mmseg's ``MMSegInferencer``) given weights but no config would build
  the model from config text stored in the checkpoint; it now stops with a named error.
* **Local writes are atomic** (:class:`AtomicLocalBackend`, MMEngine's ``local`` file
  backend, which ``save_checkpoint`` and ``mmengine.dump`` write through).
"""
from __future__ import annotations

import logging
import os.path as osp
import re
from collections.abc import Callable, Mapping
from pathlib import Path

import mmengine.runner.checkpoint as mmengine_checkpoint
from mmengine.dist import get_dist_info
from mmengine.fileio import LocalBackend, get_file_backend, register_backend
from mmengine.infer import BaseInferencer
from mmengine.logging import print_log
from mmengine.runner import CheckpointLoader

from ..checkpoint.convert import canonical_checkpoint
from ..checkpoint.errors import CheckpointError
from ..checkpoint.read import download, is_url, read_checkpoint
from ..checkpoint.write import atomic_write_bytes

#: Config text in a checkpoint, and who would run it as Python (``Config.fromstring``).
CONFIG_TEXT = {
    ('meta', 'config'): 'mmengine Runner.resume',
    ('meta', 'cfg'): 'mmengine BaseInferencer._init_model (no config given)',
    ('message_hub', 'runtime_info', 'cfg'): 'mmengine BaseInferencer._init_model',
}
#: ``message_hub.runtime_info`` entries that name files MMEngine's CheckpointHook removes.
_CHECKPOINT_PATHS = re.compile(r'^(best_ckpt(_.+)?|last_ckpt)$')


def _drop_path_entry(runtime_info: dict, key: str, source_dir: str | None) -> bool:
    value = runtime_info[key]
    if not isinstance(value, str) or source_dir is None:
        return True
    path = osp.realpath(value)
    return osp.dirname(path) != source_dir or not path.endswith('.pth')


def sanitize_checkpoint(checkpoint: object, source: str | None = None) -> object:
    """Remove what MMEngine would execute or delete on a checkpoint's say, in place.

    * ``meta.config``, ``meta.cfg`` and ``message_hub.runtime_info.cfg`` (config text, see
      :data:`CONFIG_TEXT`) are removed. Nothing a training run needs is lost: MMEngine
      writes the current config into each new checkpoint, and the inferencers take their
      config from the caller.
    * ``runtime_info.best_ckpt*`` and ``last_ckpt`` (files CheckpointHook removes when a
      better checkpoint arrives) are kept only when they name a ``.pth`` file in the folder
      of the checkpoint being read; ``keep_ckpt_ids`` and ``outdated_ckpt_ids`` (steps whose
      checkpoints are removed) only when they are lists of integers.

    Args:
        checkpoint: What a checkpoint file held.
        source: The local file it came from (None for URLs and bytes: no path is kept).

    Returns:
        The same object.
    """
    if not isinstance(checkpoint, dict):
        return checkpoint
    meta = checkpoint.get('meta')
    if isinstance(meta, dict):
        meta.pop('config', None)
        meta.pop('cfg', None)
    hub = checkpoint.get('message_hub')
    runtime_info = hub.get('runtime_info') if isinstance(hub, dict) else None
    if isinstance(runtime_info, dict):
        runtime_info.pop('cfg', None)
        source_dir = osp.dirname(osp.realpath(source)) if source else None
        dropped = [key for key in list(runtime_info) if _CHECKPOINT_PATHS.match(str(key))
                   and _drop_path_entry(runtime_info, key, source_dir)]
        for key in ('keep_ckpt_ids', 'outdated_ckpt_ids'):
            ids = runtime_info.get(key)
            if ids is not None and not (isinstance(ids, list)
                                        and all(type(i) is int for i in ids)):
                dropped.append(key)
        # Said only of entries that could have removed something: a file that exists
        # elsewhere, or ids that are not integers (a moved work dir's names are dropped quietly).
        named = [key for key in dropped if not isinstance(runtime_info[key], str)
                 or osp.exists(runtime_info[key])]
        for key in dropped:
            runtime_info.pop(key)
        if named:
            print_log(f'Checkpoint {source or ""}: ignored message_hub.runtime_info '
                      f'{named}: they do not name checkpoints beside this one',
                      logger='current', level=logging.WARNING)
    return checkpoint


def load_for_mmengine(source: str | bytes, map_location: object = None,
                      label: str | None = None) -> object:
    """What every MMEngine checkpoint scheme returns: safely read, canonical, sanitized."""
    local = source if isinstance(source, str) and not is_url(source) else None
    checkpoint = read_checkpoint(source, map_location or 'cpu')
    checkpoint = canonical_checkpoint(checkpoint, label or repr(source))
    return sanitize_checkpoint(checkpoint, local)


# --------------------------------------------------------------------------- schemes
# Named load_from_<scheme> as MMEngine's: it logs 'Loads checkpoint by <scheme> backend'.
def load_from_local(filename: str, map_location: object = None) -> object:
    return load_for_mmengine(filename, map_location)


def load_from_http(filename: str, map_location: object = None, model_dir: str | None = None,
               progress: bool = True) -> object:
    # In a distributed run the first rank downloads, the others wait and read its copy.
    rank, world_size = get_dist_info()
    if world_size > 1 and rank > 0:
        import torch.distributed as dist
        dist.barrier()
    if rank == 0:
        download(filename, progress)
    if world_size > 1 and rank == 0:
        import torch.distributed as dist
        dist.barrier()
    return load_for_mmengine(filename, map_location)


def _resolved(name: str, urls: Mapping[str, str], scheme: str) -> str:
    if name not in urls:
        raise CheckpointError(f'{scheme}{name} is not a model {scheme} knows')
    return urls[name]


def load_from_torchvision(filename: str, map_location: object = None) -> object:
    scheme, name = re.match(r'^(modelzoo://|torchvision://)(.*)$', filename).groups()
    return load_from_http(_resolved(name, mmengine_checkpoint.get_torchvision_models(), scheme),
                      map_location)


def load_from_openmmlab(filename: str, map_location: object = None) -> object:
    scheme, name = re.match(r'^(open-mmlab://|openmmlab://)(.*)$', filename).groups()
    name = mmengine_checkpoint.get_deprecated_model_names().get(name, name)
    target = _resolved(name, mmengine_checkpoint.get_external_models(), scheme)
    if target.startswith(('http://', 'https://')):
        return load_from_http(target, map_location)
    return load_from_local(osp.join(mmengine_checkpoint._get_mmengine_home(), target),
                       map_location)


def load_from_mmcls(filename: str, map_location: object = None) -> object:
    name = filename[len('mmcls://'):]
    checkpoint = load_from_http(_resolved(name, mmengine_checkpoint.get_mmcls_models(),
                                      'mmcls://'), map_location)
    return mmengine_checkpoint._process_mmcls_checkpoint(checkpoint)


def load_from_ceph(filename: str, map_location: object = None) -> object:
    backend = get_file_backend(filename, backend_args={'backend': 'petrel'})
    return load_for_mmengine(backend.get(filename), map_location, label=repr(filename))


def load_from_pavi(filename: str, map_location: object = None) -> object:
    from tempfile import TemporaryDirectory

    from pavi import modelcloud
    model = modelcloud.get(filename[len('pavi://'):])
    with TemporaryDirectory() as tmp_dir:
        downloaded = osp.join(tmp_dir, 'checkpoint.pth')
        model.download(downloaded)
        with open(downloaded, 'rb') as f:
            return load_for_mmengine(f.read(), map_location, label=repr(filename))


#: MMEngine's schemes and the loader that replaces each (same prefixes as MMEngine's).
SCHEMES: dict[tuple[str, ...], Callable] = {
    ('', ): load_from_local,
    ('http://', 'https://'): load_from_http,
    ('modelzoo://', 'torchvision://'): load_from_torchvision,
    ('open-mmlab://', 'openmmlab://'): load_from_openmmlab,
    ('mmcls://', ): load_from_mmcls,
    (r'(\S+\:)?s3://', r'(\S+\:)?petrel://'): load_from_ceph,
    ('pavi://', ): load_from_pavi,
}


def load_from_unknown_scheme(filename: str, map_location: object = None) -> object:
    known = ', '.join(p for prefixes in SCHEMES for p in prefixes if p)
    raise CheckpointError(f'Refused to load checkpoint {filename!r}: its scheme is not one '
                          f'that cvt_backbone reads safely ({known})')


def _load_url(url: str, model_dir: str | None = None, map_location: object = None,
              progress: bool = True, **kwargs) -> object:
    """A stand-in for MMEngine's ``load_url`` (which would read with ``torch.load``)."""
    return load_from_http(url, map_location)


def install_schemes() -> None:
    """Make every MMEngine checkpoint scheme read through the safe reader.

    MMEngine's own schemes get this module's loaders. A scheme that another package
    registers, now or later, is refused rather than left to read with ``torch.load``: the
    lookup of a path's loader itself is guarded.
    """
    for prefixes, loader in SCHEMES.items():
        CheckpointLoader.register_scheme(list(prefixes), loader, force=True)
    ours = set(SCHEMES.values())
    lookup = CheckpointLoader._get_checkpoint_loader.__func__
    if not getattr(lookup, '_cvt_guarded', False):
        def guarded_lookup(cls, path):
            loader = lookup(cls, path)
            return loader if loader in ours else load_from_unknown_scheme

        guarded_lookup._cvt_guarded = True
        CheckpointLoader._get_checkpoint_loader = classmethod(guarded_lookup)
    # Anything in MMEngine that downloads through this name reads safely too.
    mmengine_checkpoint.load_url = _load_url


# --------------------------------------------------------------------------- inferencers
def _guard_inferencers() -> None:
    original = BaseInferencer._init_model
    if getattr(original, '_cvt_guarded', False):
        return

    def _init_model(self, cfg, weights, device='cpu'):
        if not cfg:
            raise ValueError(
                f'{type(self).__name__} was given weights ({weights!r}) but no config: pass '
                f'the config file as model=... (cvt_backbone never builds a model from '
                f'config text stored in a checkpoint, which MMEngine would run as Python)')
        return original(self, cfg, weights, device)

    _init_model._cvt_guarded = True
    _init_model.__doc__ = original.__doc__
    BaseInferencer._init_model = _init_model


# --------------------------------------------------------------------------- writing
@register_backend('local', force=True, prefixes='')
class AtomicLocalBackend(LocalBackend):
    """MMEngine's local storage backend with atomic, durable :meth:`put` and :meth:`put_text`.

    Everything else (reads, listing, removal, symlinks) is :class:`LocalBackend`'s.
    """

    def put(self, obj: bytes, filepath: str | Path) -> None:
        """Write bytes to ``filepath`` atomically (see
        :func:`~cvt_backbone.checkpoint.write.atomic_write_bytes`)."""
        atomic_write_bytes(obj, filepath)

    def put_text(self, obj: str, filepath: str | Path, encoding: str = 'utf-8') -> None:
        """Write text to ``filepath`` atomically."""
        atomic_write_bytes(obj.encode(encoding), filepath)


install_schemes()
_guard_inferencers()
