"""A training run's work dir: which checkpoint ``--resume`` means, and one run at a time.

* :func:`resolve_resume`: ``--resume`` with or without a path;
* :class:`WorkDirLock`: a run holds its work dir; a second run started into it is refused
  with one line naming the process that holds it;
* :func:`check_output_dir`: a folder a tool writes into holds no link that would carry a
  write to a file elsewhere.
"""
from __future__ import annotations

import fcntl
import logging
import os
import os.path as osp
import stat
from collections.abc import Mapping

from mmengine.config import Config
from mmengine.logging import print_log

from cvt_backbone import CheckpointError, ConfigError
from cvt_backbone.checkpoint import check_local_path, is_hub_id, is_url, read_checkpoint

#: The file a training run holds locked in its work dir.
LOCK_FILE = '.train.lock'
#: ``last_checkpoint`` holds one path; a longer file is not MMEngine's.
MAX_MARKER_BYTES = 4096


def resolve_resume(cfg: Config, resume: str | None) -> None:
    """Set ``cfg.resume`` and ``cfg.load_from`` for ``--resume [PATH]``.

    ``--resume`` alone keeps mmdet's meaning: continue from the latest checkpoint of the work
    dir (its ``last_checkpoint`` file), or start from scratch if there is none, which is
    said in one warning line naming the folder searched (a mistyped ``--work-dir`` would
    otherwise cost a whole run). ``--resume PATH`` takes what the Runner loads: a file, a
    URL or a hub repository id. A run with no fixed seed takes the checkpoint's, so that
    its samplers shuffle as the interrupted run did.

    Raises:
        CheckpointError: ``last_checkpoint`` is larger than a path or names a file that does
            not exist.
        FileNotFoundError: ``--resume PATH`` names no file (and no URL or hub id).
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
        size = os.stat(marker).st_size
        if size > MAX_MARKER_BYTES:
            raise CheckpointError(f'{marker} holds {size} bytes, not the one path MMEngine '
                                  f'writes there: pass --resume PATH')
        with open(marker, encoding='utf-8', errors='replace') as f:
            path = f.read(MAX_MARKER_BYTES).strip()
        if not osp.isfile(path):
            raise CheckpointError(f'{marker} names the checkpoint {path!r}, which does not '
                                  f'exist: pass --resume PATH with a checkpoint that does')
        resume = path
    elif not is_url(resume) and not is_hub_id(resume):
        check_local_path(resume)
    cfg.resume, cfg.load_from = True, resume
    randomness = dict(cfg.get('randomness') or {})
    if randomness.get('seed') is None:
        checkpoint = read_checkpoint(resume)
        meta = checkpoint.get('meta') if isinstance(checkpoint, Mapping) else None
        seed = meta.get('seed') if isinstance(meta, Mapping) else None
        if type(seed) is int and 0 <= seed < 1 << 32:
            cfg.randomness = dict(randomness, seed=seed)


def check_output_dir(path: str, option: str) -> None:
    """Refuse a folder to write into that holds a symbolic link, a hard-linked file, or
    anything that is neither a file nor a folder.

    The tools and MMEngine write into the work dir (and the show and output dirs) by name:
    the config's copy, logs, checkpoints, ``last_checkpoint``, drawings. Opening such a name
    follows a link planted in a folder handed over for ``--resume`` or testing, and the write
    lands in the file it points to. So no entry of the folder, at any depth, may be a
    symbolic link or a file with another hard link; the folder itself may be a link. Nor may
    one be a pipe, socket or device: a write there goes to another process, or waits forever.

    Args:
        path: The folder (it may not exist yet).
        option: What named it (``'--work-dir'``), for the message.

    Raises:
        ConfigError: naming the first such entry.
    """
    for root, dirs, files in os.walk(path):  # never descends into linked folders
        for name in dirs + files:
            entry = osp.join(root, name)
            info = os.lstat(entry)
            if stat.S_ISLNK(info.st_mode):
                what = f'a symbolic link to {os.readlink(entry)!r}'
            elif stat.S_ISREG(info.st_mode) and info.st_nlink > 1:
                what = f'a file with {info.st_nlink - 1} other hard link(s)'
            elif not (stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode)):
                what = 'neither a file nor a folder (a pipe, socket or device)'
            else:
                continue
            raise ConfigError(f'{option} {path!r} holds {osp.relpath(entry, path)!r}, {what}: '
                              f'what is written there would not land in a file of its own; '
                              f'remove it or pass another {option}')


class WorkDirLock:
    """Hold ``<work dir>/.train.lock`` (an advisory ``flock``) while a run trains there.

    The operating system releases the lock when the process ends, however it ends, so a
    killed run's work dir is free for its ``--resume``. In a distributed run only the
    first process of the job takes it.

    Args:
        work_dir: The run's work dir (created if missing).

    Raises:
        ConfigError: a live process holds the work dir; the message names its PID.
    """

    def __init__(self, work_dir: str) -> None:
        os.makedirs(work_dir, exist_ok=True)
        self.path = osp.join(work_dir, LOCK_FILE)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(self._fd, 32).decode(errors='replace').strip() or 'another'
            os.close(self._fd)
            raise ConfigError(f'work dir {work_dir!r} is in use by a live training run '
                              f'(process {holder}): wait for it, stop it, or pass another '
                              f'--work-dir') from None
        os.ftruncate(self._fd, 0)
        os.write(self._fd, str(os.getpid()).encode())

    def release(self) -> None:
        """Let the work dir go (also done by the process's end)."""
        os.close(self._fd)
