"""Convert an official CvT checkpoint (microsoft/CvT) into an mmpretrain checkpoint.

The official files are plain state dicts (``stage0.patch_embed.proj.weight``, ...,
``stage2.cls_token``, ``norm.weight``, ``head.weight``), some wrapped in ``'state_dict'`` or
``'model'``. The output is ``{'state_dict': ..., 'meta': ...}``:

* by default a whole ``ImageClassifier`` (``backbone.*`` and ``head.fc.*``) that loads
  strictly into the ``configs/cvt/`` classifier of its arch and number of classes
  (``tools/test.py CONFIG CHECKPOINT``, or ``load_from``);
* with ``--backbone-only`` the backbone keys without a prefix, for
  ``init_cfg=dict(type='Pretrained', checkpoint=...)`` of a ``CvT`` backbone. The class-token
  norm ``cls_norm`` is kept: a classifier backbone (``out_type='cls_token'``) loads it, a
  detection or segmentation backbone (``out_type='featmap'``) sets it aside.

The arch (cvt-13, cvt-21 or cvt-w24) is inferred from the stage widths and depths, checked
against ``--arch`` when given, printed and stored in ``meta``. Examples::

    python tools/model_converters/cvt_official_to_mmpretrain.py \\
        CvT-13-224x224-IN-1k.pth cvt-13_in1k-224px.pth
    python tools/model_converters/cvt_official_to_mmpretrain.py \\
        CvT-21-384x384-IN-22k.pth cvt-21_backbone.pth --backbone-only --arch cvt-21
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
import re
import sys
import uuid
from collections import OrderedDict
from collections.abc import Mapping

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

import torch  # noqa: E402

from cvt_backbone import (CheckpointError, CvT, convert_official_cvt,  # noqa: E402
                          load_checkpoint_file)
from cvt_backbone.checkpoint import is_official_cvt  # noqa: E402

_PATCH_EMBED = re.compile(r'^stage(\d+)\.patch_embed\.proj\.weight$')
_BLOCK = re.compile(r'^stage(\d+)\.blocks\.(\d+)\.')


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line.

    Args:
        argv: Arguments without the program name; ``None`` reads ``sys.argv``.

    Returns:
        The parsed arguments.
    """
    parser = argparse.ArgumentParser(
        description='Convert an official CvT checkpoint into an mmpretrain checkpoint')
    parser.add_argument('src', help='official checkpoint (.pth)')
    parser.add_argument('dst', help='output file')
    parser.add_argument('--backbone-only', action='store_true',
                        help='write only the backbone weights (no prefix, no classifier head) '
                        "for a CvT backbone's init_cfg")
    parser.add_argument('--arch', choices=sorted(CvT.arch_settings),
                        help='fail unless the checkpoint is this arch')
    return parser.parse_args(argv)


def official_state_dict(checkpoint: object, src: str) -> OrderedDict:
    """Find the official CvT state dict in a loaded checkpoint.

    Args:
        checkpoint: What the file held: a state dict, or one wrapped in ``'state_dict'`` or
            ``'model'``; a ``module.`` prefix (distributed training) is removed.
        src: The file name, for messages.

    Returns:
        The state dict with the official key names.

    Raises:
        CheckpointError: it is not a state dict of tensors with official CvT keys.
    """
    if isinstance(checkpoint, Mapping):
        for wrapper in ('state_dict', 'model'):
            if isinstance(checkpoint.get(wrapper), Mapping):
                checkpoint = checkpoint[wrapper]
                break
    if (not isinstance(checkpoint, Mapping) or not checkpoint
            or not all(isinstance(v, torch.Tensor) for v in checkpoint.values())):
        raise CheckpointError(f'{src} is not a CvT checkpoint: it does not hold a state dict of '
                              f'tensors (got {type(checkpoint).__name__})')
    state_dict = OrderedDict(
        (k[len('module.'):] if k.startswith('module.') else k, v) for k, v in checkpoint.items())
    if not is_official_cvt(state_dict):
        keys = list(state_dict)
        if any(k.startswith(('backbone.stages.', 'stages.')) for k in keys):
            raise CheckpointError(f'{src} already uses the mmpretrain key names '
                                  f'({keys[0]}, ...): there is nothing to convert')
        raise CheckpointError(f'{src} is not an official CvT checkpoint: it has no '
                              f"'stage0.patch_embed.proj.weight' (first keys: "
                              f'{", ".join(keys[:4])})')
    return state_dict


def infer_arch(state_dict: Mapping[str, torch.Tensor], src: str) -> str:
    """Name the CvT preset whose stage widths and depths the checkpoint has.

    Args:
        state_dict: Official CvT state dict.
        src: The file name, for messages.

    Returns:
        A key of ``CvT.arch_settings``: ``'cvt-13'``, ``'cvt-21'`` or ``'cvt-w24'``.

    Raises:
        CheckpointError: no preset has these widths and depths.
    """
    dims, depths = {}, {}
    for key, value in state_dict.items():
        if match := _PATCH_EMBED.match(key):
            dims[int(match[1])] = value.shape[0]
        if match := _BLOCK.match(key):
            stage, block = int(match[1]), int(match[2])
            depths[stage] = max(depths.get(stage, 0), block + 1)
    embed_dims = [dims[i] for i in sorted(dims)]
    stage_depths = [depths.get(i, 0) for i in sorted(dims)]
    for name, arch in CvT.arch_settings.items():
        if arch['embed_dims'] == embed_dims and arch['depths'] == stage_depths:
            return name
    raise CheckpointError(f'{src} is a CvT checkpoint with embed_dims {embed_dims} and depths '
                          f'{stage_depths}, which is none of the presets '
                          + ', '.join(f'{name} ({arch["embed_dims"]}, {arch["depths"]})'
                                      for name, arch in CvT.arch_settings.items()))


def check_backbone(backbone: Mapping[str, torch.Tensor], arch: str, src: str) -> None:
    """Load the backbone weights strictly into ``CvT(arch, out_type='cls_token')``.

    Args:
        backbone: Backbone state dict with this package's key names.
        arch: Preset name.
        src: The file name, for messages.

    Raises:
        CheckpointError: a key is missing or unexpected, or a shape differs.
    """
    model = CvT(arch=arch, out_type='cls_token')
    try:
        model.load_state_dict(backbone, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f'{src} does not fit CvT(arch={arch!r}): {err}') from None


def convert(state_dict: Mapping[str, torch.Tensor], arch: str, src: str,
            backbone_only: bool) -> OrderedDict:
    """Rename an official state dict to mmpretrain's ``ImageClassifier`` or to ``CvT``.

    Args:
        state_dict: Official CvT state dict.
        arch: Its preset name (see :func:`infer_arch`).
        src: The file name, for messages.
        backbone_only: Return the backbone keys without a prefix and without the head.

    Returns:
        ``backbone.*`` and ``head.fc.*`` keys, or the bare backbone keys.

    Raises:
        CheckpointError: the backbone does not load strictly, the head is missing (unless
            ``backbone_only``) or its width is not the last stage's.
    """
    converted = convert_official_cvt(state_dict)
    backbone = OrderedDict((k, v) for k, v in converted.items() if not k.startswith('head.'))
    check_backbone(backbone, arch, src)
    if backbone_only:
        return backbone
    if 'head.weight' not in converted or 'head.bias' not in converted:
        raise CheckpointError(f'{src} has no classifier head (head.weight, head.bias); '
                              'convert it with --backbone-only')
    width = CvT.arch_settings[arch]['embed_dims'][-1]
    if converted['head.weight'].shape[1:] != (width,):
        raise CheckpointError(f'{src}: head.weight has shape '
                              f'{tuple(converted["head.weight"].shape)}, but a {arch} head '
                              f'takes {width} channels')
    out = OrderedDict((f'backbone.{k}', v) for k, v in backbone.items())
    out['head.fc.weight'] = converted['head.weight']
    out['head.fc.bias'] = converted['head.bias']
    return out


def save_atomically(checkpoint: dict, dst: str) -> None:
    """Write ``checkpoint`` to a hidden file beside ``dst``, then rename it to ``dst``.

    A failed write leaves ``dst`` as it was and no temporary file behind. The new file gets
    the permissions that ``open(dst, 'wb')`` would give it.

    Args:
        checkpoint: What to save.
        dst: The output path; missing folders are created.
    """
    folder = osp.dirname(osp.abspath(dst))
    os.makedirs(folder, exist_ok=True)
    tmp = osp.join(folder, f'.{osp.basename(dst)}.{uuid.uuid4().hex[:12]}.tmp')
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, 'wb') as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dst)
    except BaseException:
        os.unlink(tmp)
        raise


def main(argv: list[str] | None = None) -> int:
    """Run the conversion.

    Args:
        argv: Command-line arguments without the program name; ``None`` reads ``sys.argv``.

    Returns:
        The exit status: 0 on success, 1 with an ``error: ...`` line on stderr otherwise.
    """
    args = parse_args(argv)
    try:
        print(f'Loading {args.src}')
        state_dict = official_state_dict(load_checkpoint_file(args.src), args.src)
        arch = infer_arch(state_dict, args.src)
        spec = CvT.arch_settings[arch]
        num_classes = state_dict['head.weight'].shape[0] if 'head.weight' in state_dict else 0
        print(f'Official CvT checkpoint, {len(state_dict)} tensors: arch {arch} (embed_dims '
              f'{spec["embed_dims"]}, depths {spec["depths"]}), '
              + (f'head with {num_classes} classes' if num_classes else 'no head'))
        if args.arch and args.arch != arch:
            raise CheckpointError(f'{args.src} is a {arch} checkpoint (embed_dims '
                                  f'{spec["embed_dims"]}, depths {spec["depths"]}), not '
                                  f'{args.arch}')
        print(f'Checking the weights against CvT(arch={arch!r})')
        converted = convert(state_dict, arch, args.src, args.backbone_only)
        meta = dict(arch=arch, source=osp.basename(args.src), backbone_only=args.backbone_only,
                    converter='cvt_official_to_mmpretrain')
        if not args.backbone_only:
            meta['num_classes'] = num_classes
        print(f'Writing {args.dst}: {len(converted)} tensors'
              + (' (backbone only)' if args.backbone_only else ''))
        save_atomically({'state_dict': converted, 'meta': meta}, args.dst)
    except (CheckpointError, OSError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    print('Done')
    return 0


if __name__ == '__main__':
    sys.exit(main())
