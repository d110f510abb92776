"""Convert any published CvT checkpoint into an mmpretrain checkpoint (.pth or .safetensors).

Reads, without running code from them:

* the official ``.pth`` files (``CvT-13-224x224-IN-1k.pth``, ...: ``stage0.patch_embed...``);
* transformers checkpoints: ``model.safetensors``, ``pytorch_model.bin``, a folder written by
  ``save_pretrained`` or a downloaded hub snapshot (its ``config.json`` is checked), or a hub
  ``resolve/`` URL;
* this project's and mmpretrain / mmdet / mmseg checkpoints (their ``backbone.*``).

The output, ``{'state_dict': ..., 'meta': ...}`` in a ``.pth`` or a flat ``.safetensors``
file (the format follows DST's suffix, or ``--format``), is

* by default a whole ``ImageClassifier`` (``backbone.*`` and ``head.fc.*``) that loads
  strictly into the ``configs/cvt/`` classifier of its arch (``tools/test.py CONFIG DST``);
* with ``--backbone-only`` the backbone keys without a prefix, for
  ``init_cfg=dict(type='Pretrained', checkpoint=DST)`` of a CvT backbone.

The arch (cvt-13, cvt-21 or cvt-w24) is inferred from the weights, checked against the
``config.json`` of a transformers checkpoint and against ``--arch`` when given, printed, and
stored with the weights. Every tensor's shape is compared with a CvT of that arch built on
PyTorch's ``meta`` device before anything is allocated: a file cannot make the converter
build a model larger than the weights it holds. Examples::

    python tools/model_converters/cvt2mmpretrain.py CvT-13-224x224-IN-1k.pth cvt-13.pth
    python tools/model_converters/cvt2mmpretrain.py path/to/cvt-21-384-22k cvt-21.safetensors
    python tools/model_converters/cvt2mmpretrain.py \\
        https://huggingface.co/microsoft/cvt-13/resolve/main/pytorch_model.bin \\
        checkpoints/cvt-13_backbone.pth --backbone-only --arch cvt-13
"""
from __future__ import annotations

import argparse
import os.path as osp
from collections import OrderedDict
from collections.abc import Mapping

import torch

from cvt_backbone import CheckpointError, CvT
from cvt_backbone.checkpoint import (
    diff_on_meta,
    from_classifier_keys,
    read_checkpoint,
    to_classifier_keys,
    to_cvt_keys,
    unwrap_state_dict,
)
from cvt_backbone.checkpoint.convert import (
    arch_differences,
    arch_from_state_dict,
    arch_from_transformers_config,
)
from cvt_backbone.checkpoint.write import atomic_save, atomic_save_safetensors
from cvt_backbone.errors import run_main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line (``argv`` without the program name; None reads ``sys.argv``)."""
    parser = argparse.ArgumentParser(
        description='Convert a CvT checkpoint (official, transformers, OpenMMLab) into an '
                    'mmpretrain checkpoint')
    parser.add_argument('src', help='checkpoint file, transformers folder or http(s) URL')
    parser.add_argument('dst', help='output file (.pth or .safetensors)')
    parser.add_argument('--backbone-only', action='store_true',
                        help='write only the backbone weights (no prefix, no classifier head) '
                        "for a CvT backbone's init_cfg")
    parser.add_argument('--arch', choices=sorted(CvT.arch_settings),
                        help='fail unless the checkpoint is this arch')
    parser.add_argument('--format', choices=['pth', 'safetensors'],
                        help='output format (default: from the suffix of dst, else pth)')
    return parser.parse_args(argv)


def cvt_state_dict(checkpoint: object, src: str) -> tuple[OrderedDict, str]:
    """The CvT weights of a checkpoint, with this package's key names (classifier: ``head.*``).

    Returns:
        The state dict and the format it came in (``'official'``, ``'transformers'`` or
        ``'cvt'``).

    Raises:
        CheckpointError: it holds no CvT weights.
    """
    state_dict = unwrap_state_dict(checkpoint, src)
    if any(k.startswith('backbone.') for k in state_dict):
        state_dict = from_classifier_keys(state_dict)
    converted, fmt = to_cvt_keys(state_dict)
    if fmt is None:
        keys = list(state_dict)
        raise CheckpointError(f'{src} is not a CvT checkpoint: none of its keys is a CvT '
                              f'stage embedding (first keys: {", ".join(keys[:4])})')
    return converted, fmt


def infer_arch(state_dict: Mapping[str, torch.Tensor], src: str,
               stated: Mapping | None = None) -> str | dict:
    """The arch of the weights: the preset whose widths and depths they have, else the arch a
    transformers ``config.json`` states in full.

    Args:
        state_dict: The weights, with this package's key names.
        src: Names the checkpoint in errors.
        stated: The arch fields of a ``config.json``, if there is one.

    Raises:
        CheckpointError: no preset fits and no ``config.json`` states the arch (heads and
            strides are not visible in the weights); or the ``config.json`` contradicts the
            weights.
    """
    found = arch_from_state_dict(state_dict)
    arch = next((name for name, preset in CvT.arch_settings.items()
                 if preset['embed_dims'] == found['embed_dims']
                 and preset['depths'] == found['depths']), None)
    if arch is None and stated and all(k in stated for k in CvT.required_arch_keys):
        arch = {k: v for k, v in stated.items() if k in CvT.required_arch_keys
                or k in CvT.optional_arch_keys}
    if arch is None:
        raise CheckpointError(
            f'{src} is a CvT checkpoint with embed_dims {found["embed_dims"]} and depths '
            f'{found["depths"]}, which is none of the presets '
            + ', '.join(f'{name} ({preset["embed_dims"]}, {preset["depths"]})'
                        for name, preset in CvT.arch_settings.items()))
    differences = arch_differences(CvT.parse_arch(arch), stated or {})
    differences += arch_differences(CvT.parse_arch(arch), found)
    if differences:
        raise CheckpointError(f'{src}: its config.json describes another arch than its '
                              f'weights: ' + '; '.join(differences))
    return arch


def convert(state_dict: Mapping[str, torch.Tensor], arch: str | dict, src: str,
            backbone_only: bool) -> OrderedDict:
    """The output weights, checked by loading them strictly into ``CvT(arch)`` (with the class
    token's norm, or, for a detector's or segmentor's backbone, its per-stage output norms),
    after every shape is compared with that CvT built on the ``meta`` device.

    Returns:
        ``backbone.*`` and ``head.fc.*`` keys, or the bare backbone keys.

    Raises:
        CheckpointError: the backbone does not fit ``CvT(arch)`` (names the keys and shapes),
            the head is missing (unless ``backbone_only``) or its width is not the last
            stage's.
    """
    backbone = OrderedDict((k, v) for k, v in state_dict.items() if not k.startswith('head.'))
    out_type = 'cls_token' if 'cls_norm.weight' in backbone else 'featmap'
    diff = diff_on_meta(lambda: CvT(arch=arch, out_type=out_type), backbone)
    if diff:
        raise CheckpointError(f'{src} does not fit CvT(arch={arch!r}): {diff.describe()}')
    model = CvT(arch=arch, out_type=out_type)
    try:
        model.load_state_dict(backbone, strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[1:2] or [str(err)]
        raise CheckpointError(f'{src} does not fit CvT(arch={arch!r}): {first[0].strip()}') \
            from None
    if backbone_only:
        return backbone
    if 'head.weight' not in state_dict or 'head.bias' not in state_dict:
        raise CheckpointError(f'{src} has no classifier head; convert it with --backbone-only')
    width = CvT.parse_arch(arch)['embed_dims'][-1]
    if state_dict['head.weight'].shape[1:] != (width,):
        raise CheckpointError(f'{src}: the classifier head has shape '
                              f'{tuple(state_dict["head.weight"].shape)}, but a {arch} head '
                              f'takes {width} channels')
    return to_classifier_keys(OrderedDict(
        [*backbone.items(), ('head.weight', state_dict['head.weight']),
         ('head.bias', state_dict['head.bias'])]))


def main(argv: list[str] | None = None) -> None:
    """Run the conversion (``argv`` without the program name; None reads ``sys.argv``)."""
    args = parse_args(argv)
    fmt_out = args.format or ('safetensors' if args.dst.endswith('.safetensors') else 'pth')
    print(f'Loading {args.src}')
    checkpoint = read_checkpoint(args.src)
    state_dict, fmt = cvt_state_dict(checkpoint, args.src)
    meta = checkpoint.get('meta') if isinstance(checkpoint, Mapping) else None
    config = meta.get('transformers_config') if isinstance(meta, Mapping) else None
    stated = arch_from_transformers_config(config) if isinstance(config, Mapping) else None
    arch = infer_arch(state_dict, args.src, stated)
    spec = CvT.parse_arch(arch)
    num_classes = state_dict['head.weight'].shape[0] if 'head.weight' in state_dict else 0
    print(f'{fmt} CvT checkpoint, {len(state_dict)} tensors: arch {arch!r} (embed_dims '
          f'{spec["embed_dims"]}, depths {spec["depths"]}), '
          + (f'head with {num_classes} classes' if num_classes else 'no head'))
    if args.arch and args.arch != arch:
        raise CheckpointError(f'{args.src} is a {arch} checkpoint (embed_dims '
                              f'{spec["embed_dims"]}, depths {spec["depths"]}), not '
                              f'{args.arch}')
    print(f'Checking the weights against CvT(arch={arch!r})')
    converted = convert(state_dict, arch, args.src, args.backbone_only)
    meta = dict(arch=arch, source=osp.basename(args.src.rstrip('/')), source_format=fmt,
                backbone_only=args.backbone_only, converter='cvt2mmpretrain')
    if not args.backbone_only:
        meta['num_classes'] = num_classes
    print(f'Writing {args.dst} ({fmt_out}): {len(converted)} tensors'
          + (' (backbone only)' if args.backbone_only else ''))
    if fmt_out == 'safetensors':
        atomic_save_safetensors(converted, args.dst, {k: str(v) for k, v in meta.items()})
    else:
        atomic_save({'state_dict': converted, 'meta': meta}, args.dst)
    print('Done')


if __name__ == '__main__':
    run_main(main)
