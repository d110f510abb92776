"""What ``--resume`` means: which checkpoint, said loudly when there is none."""
from __future__ import annotations

import logging
import os.path as osp
from collections.abc import Mapping

from mmengine.config import Config
from mmengine.logging import print_log

from ..checkpoint import CheckpointError, check_local_path, is_url, read_checkpoint


def resolve_resume(cfg: Config, resume: str | None) -> None:
    """Set ``cfg.resume`` and ``cfg.load_from`` for ``--resume [PATH]``.

    ``--resume`` alone keeps mmdet's meaning: continue from the latest checkpoint of the work
    dir (its ``last_checkpoint`` file), or start from scratch if there is none, which is
    said in one warning line naming the folder searched (a mistyped ``--work-dir`` would
    otherwise cost a whole run). A run with no fixed seed takes the checkpoint's, so that
    its samplers shuffle as the interrupted run did.

    Raises:
        CheckpointError: ``last_checkpoint`` names a file that does not exist.
        FileNotFoundError: ``--resume PATH`` names no file.
    """
    if resume is None:
        return
    if resume == 'auto':
        marker = osp.join(cfg.work_dir, 'last_checkpoint')
        if not osp.isfile(marker):
            print_log(f'--resume: no checkpoint to resume from in {osp.abspath(cfg.work_dir)} '
                      f'(it has no last_checkpoint file): training starts from scratch',
                      logger='current', level=logging.WARNING)
            cfg.resume, cfg.load_from = False, None
            return
        with open(marker, encoding='utf-8') as f:
            path = f.read().strip()
        if not osp.isfile(path):
            raise CheckpointError(f'{marker} names the checkpoint {path!r}, which does not '
                                  f'exist: pass --resume PATH with a checkpoint that does')
        resume = path
    elif not is_url(resume):
        check_local_path(resume)
    cfg.resume, cfg.load_from = True, resume
    randomness = dict(cfg.get('randomness') or {})
    if randomness.get('seed') is None:
        meta = read_checkpoint(resume).get('meta')
        if isinstance(meta, Mapping) and type(meta.get('seed')) is int:
            cfg.randomness = dict(randomness, seed=meta['seed'])
