"""Run a trained model on images with its toolbox's own inferencer, and draw the predictions.

    python tools/infer.py CONFIG CHECKPOINT INPUT [--out-dir DIR] [--amp]
    python tools/infer.py configs/demo/mask-rcnn_cvt-tiny_fpn_shapes.py \\
        work_dirs/demo/mask_rcnn/epoch_5.pth data/shapes/images/val --out-dir work_dirs/infer

INPUT is an image, a folder (its images and those of its subfolders: a folder of class
folders works as it is) or a glob pattern (quote it). The config's ``default_scope`` picks
the inferencer: mmdet's ``DetInferencer``, mmseg's ``MMSegInferencer`` or mmpretrain's
``ImageClassificationInferencer``. CHECKPOINT is a file, a ``save_pretrained`` folder, a URL
or a hub repository id; it must fill the config's model. Into ``--out-dir`` go, for each
image, named after its path relative to INPUT: the drawn predictions
(``vis/<name>.png``) and the predictions themselves (``preds/<name>.json`` for mmdet and
mmpretrain, the label map ``pred/<name>.png`` for mmseg). ``--amp`` runs the backbone and
the neck under autocast (bfloat16 on the CPU and on GPUs that support it, else float16).
"""
from __future__ import annotations

import argparse
import glob
import os
import os.path as osp

import torch
from mmengine.config import DictAction

from cvt_backbone import ConfigError
from cvt_backbone.apis import config_scope, load_config
from cvt_backbone.errors import printable, run_main
from cvt_backbone.training import use_safe_loading
from inferencers import INFERENCERS
from run_config import check_cfg_options
from work_dir import check_output_dir

IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp')


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help='config file (mmdet, mmseg or mmpretrain)')
    parser.add_argument('checkpoint', help='checkpoint file, save_pretrained folder, URL or '
                        'hub repository id')
    parser.add_argument('input', help='an image, a folder of images (searched recursively) '
                        'or a glob pattern')
    parser.add_argument('--out-dir', default='work_dirs/infer', help='where drawings and '
                        'predictions go (default: work_dirs/infer)')
    parser.add_argument('--device', default='cpu', help='cpu, cuda or cuda:N (default: cpu)')
    parser.add_argument('--score-thr', type=float, default=0.3,
                        help='mmdet: draw and count only boxes scoring at least this')
    parser.add_argument('--amp', action='store_true',
                        help='backbone and neck under autocast: bfloat16 on the CPU and on GPUs '
                             'that support it, else float16; heads in float32')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries, e.g. model.test_cfg.rcnn.max_per_img=5')
    return parser.parse_args()


def check_device(device: str) -> str:
    """``device`` if torch knows it and it is there.

    Raises:
        ConfigError: not a device name, or a CUDA device on a machine without one.
    """
    try:
        parsed = torch.device(device)
    except RuntimeError:
        raise ConfigError(f'--device {device!r} is not a device (cpu, cuda or cuda:N)') \
            from None
    if parsed.type == 'cuda' and not torch.cuda.is_available():
        raise ConfigError(f'--device {device}: torch sees no CUDA GPU on this machine; use '
                          f'--device cpu')
    if parsed.type == 'cuda' and (parsed.index or 0) >= torch.cuda.device_count():
        raise ConfigError(f'--device {device}: this machine has {torch.cuda.device_count()} '
                          f'CUDA device(s)')
    return device


def find_images(pattern: str) -> tuple[list[str], str]:
    """The images INPUT names, and the root their output names are relative to.

    A folder gives its images and those of its subfolders (root: the folder); a glob its
    matches (root: their common folder); a file itself (root: its folder).

    Raises:
        ConfigError: nothing that looks like an image is there.
    """
    if osp.isdir(pattern):
        root = pattern
        paths = [osp.join(folder, name) for folder, _, names in os.walk(pattern)
                 for name in names]
    elif osp.isfile(pattern):
        return [pattern], osp.dirname(pattern)
    else:
        paths = glob.glob(pattern, recursive=True)
        root = osp.commonpath([osp.dirname(p) for p in paths]) if paths else ''
    images = sorted(p for p in paths if osp.isfile(p) and p.lower().endswith(IMAGE_SUFFIXES))
    if not images:
        raise ConfigError(f'{pattern!r} names no image (an image file, a folder of images or a '
                          f'glob pattern; suffixes {", ".join(IMAGE_SUFFIXES)})')
    return images, root


def main() -> None:
    args = parse_args()
    device = check_device(args.device)
    cfg = load_config(args.config)
    check_cfg_options(cfg, args.cfg_options)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    scope = config_scope(cfg, args.config)
    images, root = find_images(args.input)
    use_safe_loading()
    infer, preds = INFERENCERS[scope]
    out_dir = osp.abspath(args.out_dir)
    check_output_dir(out_dir, '--out-dir')
    lines = infer(cfg, args.checkpoint, images, root, out_dir, device, args.amp,
                  args.score_thr)
    print('\n'.join(printable(line) for line in lines))  # file names may hold anything
    print(printable(f'{len(images)} image(s): drawings in {osp.join(out_dir, "vis")}, '
                    f'predictions in {osp.join(out_dir, preds)}'))


if __name__ == '__main__':
    run_main(main)
