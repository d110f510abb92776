"""Run a trained model on images with its toolbox's own inferencer, and draw the predictions.

    python tools/infer.py CONFIG CHECKPOINT INPUT [--out-dir DIR] [--amp]
    python tools/infer.py configs/demo/mask-rcnn_cvt-tiny_fpn_shapes.py \\
        work_dirs/demo/mask_rcnn/epoch_5.pth data/shapes/images/val --out-dir work_dirs/infer

INPUT is an image, a folder (its images, not recursive) or a glob pattern (quote it). The
config's ``default_scope`` picks the inferencer: mmdet's ``DetInferencer``, mmseg's
``MMSegInferencer`` or mmpretrain's ``ImageClassificationInferencer``. Into ``--out-dir``
go the drawn predictions (``vis/``) and the predictions themselves: one JSON per image in
``preds/`` (mmdet, mmpretrain) or one label map per image in ``pred/`` (mmseg).
``--amp`` runs the backbone and the neck under autocast (bfloat16 on the CPU and on GPUs
that support it, else float16), the heads in float32.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import os.path as osp

import torch

import cvt_backbone.engine.tool  # noqa: F401  (registers CvT; quiet third-party output)
from cvt_backbone.checkpoint import atomic_write_text, check_local_path
from cvt_backbone.engine import ConfigError
from cvt_backbone.engine.amp import autocast_features
from cvt_backbone.engine.runner import load_config, run_tool

IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp')


def device(text: str) -> str:
    """A torch device string, checked (an argparse type)."""
    try:
        torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f'not a device: {text!r} (cpu, cuda or cuda:N)') from None
    return text


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help='config file (mmdet, mmseg or mmpretrain)')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('input', help='an image, a folder of images or a glob pattern')
    parser.add_argument('--out-dir', default='work_dirs/infer', help='where drawings and '
                        'predictions go (default: work_dirs/infer)')
    parser.add_argument('--device', default='cpu', type=device,
                        help='cpu, cuda or cuda:N (default: cpu)')
    parser.add_argument('--score-thr', type=float, default=0.3,
                        help='mmdet: draw and count only boxes scoring at least this')
    parser.add_argument('--amp', action='store_true',
                        help='backbone and neck under autocast: bfloat16 on the CPU and on GPUs '
                             'that support it, else float16; heads in float32')
    return parser.parse_args()


def find_images(pattern: str) -> list[str]:
    """The images INPUT names: the file itself, a folder's images, or a glob's matches.

    Raises:
        ConfigError: nothing that looks like an image is there.
    """
    if osp.isdir(pattern):
        paths = [osp.join(pattern, name) for name in os.listdir(pattern)]
    elif osp.isfile(pattern):
        return [pattern]
    else:
        paths = glob.glob(pattern)
    images = sorted(p for p in paths if osp.isfile(p) and p.lower().endswith(IMAGE_SUFFIXES))
    if not images:
        raise ConfigError(f'{pattern!r} names no image (an image file, a folder of images or a '
                          f'glob pattern; suffixes {", ".join(IMAGE_SUFFIXES)})')
    return images


def use_amp(model, args: argparse.Namespace) -> None:
    """With ``--amp``: the model's backbone and neck under autocast."""
    if args.amp:
        autocast_features(model, torch.device(args.device).type)


def infer_mmdet(config: str, checkpoint: str, images: list[str], out_dir: str,
                args: argparse.Namespace) -> list[str]:
    from mmdet.apis import DetInferencer

    inferencer = DetInferencer(model=config, weights=checkpoint, device=args.device,
                               show_progress=False)
    use_amp(inferencer.model, args)
    classes = inferencer.model.dataset_meta['classes']
    results = inferencer(images, out_dir=out_dir, no_save_pred=False,
                         pred_score_thr=args.score_thr)
    lines = []
    for image, pred in zip(images, results['predictions']):
        kept = [classes[label] for label, score in zip(pred['labels'], pred['scores'])
                if score >= args.score_thr]
        lines.append(f'{osp.basename(image)}: {len(kept)} objects'
                     + (f' ({", ".join(sorted(set(kept)))})' if kept else ''))
    return lines


def infer_mmseg(config: str, checkpoint: str, images: list[str], out_dir: str,
                args: argparse.Namespace) -> list[str]:
    import numpy as np
    from mmseg.apis import MMSegInferencer

    inferencer = MMSegInferencer(model=config, weights=checkpoint, device=args.device)
    use_amp(inferencer.model, args)
    classes = inferencer.model.dataset_meta['classes']
    predictions = inferencer(images, out_dir=out_dir)['predictions']
    if len(images) == 1:  # one image gives its map, not a list of one
        predictions = [predictions]
    return [f'{osp.basename(image)}: {", ".join(classes[i] for i in np.unique(pred))}'
            for image, pred in zip(images, predictions)]


def infer_mmpretrain(config: str, checkpoint: str, images: list[str], out_dir: str,
                     args: argparse.Namespace) -> list[str]:
    from mmpretrain.apis import ImageClassificationInferencer

    inferencer = ImageClassificationInferencer(model=config, pretrained=checkpoint,
                                               device=args.device)
    use_amp(inferencer.model, args)
    for folder in ('vis', 'preds'):
        os.makedirs(osp.join(out_dir, folder), exist_ok=True)
    results = inferencer(images, show_dir=osp.join(out_dir, 'vis'))
    lines = []
    for image, result in zip(images, results):
        name = osp.splitext(osp.basename(image))[0]
        record = {k: (v.tolist() if hasattr(v, 'tolist') else v) for k, v in result.items()}
        atomic_write_text(json.dumps(record, indent=2) + '\n',
                          osp.join(out_dir, 'preds', name + '.json'))
        label = result.get('pred_class', result['pred_label'])
        lines.append(f'{osp.basename(image)}: {label} ({result["pred_score"]:.3f})')
    return lines


INFERENCERS = {'mmdet': infer_mmdet, 'mmseg': infer_mmseg, 'mmpretrain': infer_mmpretrain}


def main() -> None:
    args = parse_args()
    cfg, _ = load_config(args.config)
    scope = cfg.get('default_scope')
    if scope not in INFERENCERS:
        raise ConfigError(f'{args.config}: default_scope is {scope!r}; tools/infer.py runs '
                          f'{", ".join(INFERENCERS)} configs')
    check_local_path(args.checkpoint)
    images = find_images(args.input)
    out_dir = osp.abspath(args.out_dir)
    lines = INFERENCERS[scope](args.config, args.checkpoint, images, out_dir, args)
    print('\n'.join(lines))
    print(f'{len(images)} image(s): drawings in {osp.join(out_dir, "vis")}, predictions in '
          f'{osp.join(out_dir, "pred" if scope == "mmseg" else "preds")}')


if __name__ == '__main__':
    run_tool(main)
