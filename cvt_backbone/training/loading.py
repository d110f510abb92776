"""Every checkpoint a run reads, read by this package's decoder: :class:`SafeLoadingHook`.

:func:`use_safe_loading` registers this module's loaders for MMEngine's own checkpoint
schemes; they read safely (:func:`~cvt_backbone.checkpoint.read.read_checkpoint`), give
foreign CvT checkpoints a classifier's layout and drop what MMEngine would act on
(:func:`sanitize_checkpoint`). Where a hook cannot reach: docs/guarantees.md.
"""
from __future__ import annotations

import os.path as osp
import re
from collections.abc import Callable, Mapping
from tempfile import TemporaryDirectory

import mmengine.runner.checkpoint as mmengine_checkpoint
from mmengine.dist import barrier, get_dist_info
from mmengine.fileio import get_file_backend
from mmengine.hooks import Hook
from mmengine.registry import HOOKS
from mmengine.runner import CheckpointLoader

from ..checkpoint.convert import canonical_checkpoint
from ..checkpoint.download import download
from ..checkpoint.read import is_url, read_checkpoint
from ..errors import CheckpointError

#: Config text in a checkpoint, and who would run it as Python (``Config.fromstring``).
CONFIG_TEXT = {
    ('meta', 'config'): 'mmengine Runner.resume',
    ('meta', 'cfg'): 'mmengine BaseInferencer._init_model (no config given)',
    ('message_hub', 'runtime_info', 'cfg'): 'mmengine BaseInferencer._init_model',
}
#: ``message_hub.runtime_info`` entries that name checkpoint files a CheckpointHook removes.
FILE_CLAIMS = re.compile(r'^(best_ckpt(_.+)?|last_ckpt|keep_ckpt_ids|outdated_ckpt_ids)$')
#: Seeds MMEngine's ``set_randomness`` accepts (NumPy's range).
SEED_RANGE = range(1 << 32)


def sanitize_checkpoint(checkpoint: object) -> object:
    """Remove, in place, what MMEngine would act on at a checkpoint's say.

    * config text (:data:`CONFIG_TEXT`); MMEngine writes the current config into each new
      checkpoint, and inferencers given no config then stop with MMEngine's own error;
    * ``runtime_info`` entries naming files (:data:`FILE_CLAIMS`);
    * ``meta.seed`` when it is not in :data:`SEED_RANGE`.

    Args:
        checkpoint: What a checkpoint file held.

    Returns:
        The same object.
    """
    if not isinstance(checkpoint, dict):
        return checkpoint
    meta = checkpoint.get('meta')
    if isinstance(meta, dict):
        meta.pop('config', None)
        meta.pop('cfg', None)
        if 'seed' in meta and not (type(meta['seed']) is int and meta['seed'] in SEED_RANGE):
            del meta['seed']
    hub = checkpoint.get('message_hub')
    runtime_info = hub.get('runtime_info') if isinstance(hub, dict) else None
    if isinstance(runtime_info, dict):
        for key in [k for k in runtime_info if k == 'cfg' or FILE_CLAIMS.match(str(k))]:
            del runtime_info[key]
    return checkpoint


def load_for_mmengine(source: str | bytes, map_location: object = None,
                      label: str | None = None) -> object:
    """What every scheme returns: safely read, canonical, sanitized."""
    checkpoint = read_checkpoint(source, map_location or 'cpu')
    checkpoint = canonical_checkpoint(checkpoint, label or f'checkpoint {source!r}')
    return sanitize_checkpoint(checkpoint)


# --------------------------------------------------------------------------- schemes
# Named load_from_<scheme> as MMEngine's: it logs 'Loads checkpoint by <scheme> backend'.
def load_from_local(filename: str, map_location: object = None) -> object:
    return load_for_mmengine(filename, map_location)


def load_from_http(filename: str, map_location: object = None, model_dir: str | None = None,
                   progress: bool = True) -> object:
    # In a distributed run the first rank downloads, the others wait and read its copy.
    rank, world_size = get_dist_info()
    if rank == 0:
        download(filename, progress)
    if world_size > 1:
        barrier()
    if rank > 0:
        download(filename, progress=False)  # the cached file
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
    if is_url(target):
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
    return load_for_mmengine(backend.get(filename), map_location, label=f'checkpoint {filename!r}')


def load_from_pavi(filename: str, map_location: object = None) -> object:
    from pavi import modelcloud  # MMEngine's pavi scheme needs it too
    model = modelcloud.get(filename[len('pavi://'):])
    with TemporaryDirectory() as tmp_dir:
        downloaded = osp.join(tmp_dir, 'checkpoint.pth')
        model.download(downloaded)
        with open(downloaded, 'rb') as f:
            return load_for_mmengine(f.read(), map_location, label=f'checkpoint {filename!r}')


#: MMEngine's schemes (the same prefixes) and the loader of this module for each.
SCHEMES: dict[tuple[str, ...], Callable] = {
    ('', ): load_from_local,
    ('http://', 'https://'): load_from_http,
    ('modelzoo://', 'torchvision://'): load_from_torchvision,
    ('open-mmlab://', 'openmmlab://'): load_from_openmmlab,
    ('mmcls://', ): load_from_mmcls,
    (r'(\S+\:)?s3://', r'(\S+\:)?petrel://'): load_from_ceph,
    ('pavi://', ): load_from_pavi,
}


def use_safe_loading() -> None:
    """Register this module's loaders for MMEngine's checkpoint schemes (public
    registration; calling it again changes nothing)."""
    for prefixes, loader in SCHEMES.items():
        CheckpointLoader.register_scheme(list(prefixes), loader, force=True)


@HOOKS.register_module()
class SafeLoadingHook(Hook):
    """Have every checkpoint the Runner reads go through this package's decoder.

    Name it in ``custom_hooks``; before the Runner initialises or loads weights
    (``before_run``), it calls :func:`use_safe_loading`. Its priority is the highest, so it
    comes before any hook that might read a checkpoint itself.
    """

    priority = 'HIGHEST'

    def before_run(self, runner) -> None:
        use_safe_loading()
