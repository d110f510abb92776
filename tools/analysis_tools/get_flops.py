"""Parameters and FLOPs of a CvT preset or of any mmpretrain / mmdet / mmseg config's model.

    python tools/analysis_tools/get_flops.py cvt-13
    python tools/analysis_tools/get_flops.py cvt-13 --shape 800 1344
    python tools/analysis_tools/get_flops.py configs/...py --shape 800 1344

A config is measured at the size its test pipeline resizes to when that is one square size
(the demo configs: 128x128), else at its toolbox's usual size (224x224 for mmpretrain,
800x1344 for mmdet, 512x512 for mmseg); ``--shape`` says otherwise.

MMEngine's FLOP counter counts one multiply-add as one "flop" (it counts MACs) and counts 0
for ``scaled_dot_product_attention``; this tool adds the attention matmuls and reports
GFLOPs = 2 x MACs, with the MACs alongside. For detectors and segmentors the count covers
the ``mode='tensor'`` forward (backbone, neck and heads, as mmdet's get_flops counts
``_forward``); the RPN/RoI part depends on the number of proposals, which here comes from
a random input.
"""
from __future__ import annotations

import argparse
import os.path as osp

import torch

from cvt_backbone import ConfigError, CvT
from cvt_backbone.errors import run_main
from flops import count_flops, tensor_forward


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('model', help=f'a config file or a CvT preset '
                                      f'({", ".join(CvT.arch_settings)})')
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'),
                        help="input height and width (default: 224 224 for presets; a config's "
                             'own square test size, else 224 224 for mmpretrain, 800 1344 for '
                             'mmdet, 512 512 for mmseg)')
    parser.add_argument('--batch', type=int, default=1, help='images per batch')
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.batch < 1:
        raise ConfigError(f'--batch must be at least 1, got {args.batch}')
    if args.model.lower() in CvT.arch_settings:
        model = CvT(arch=args.model.lower()).eval()
        shape = tuple(args.shape or (224, 224))
        smallest = model.min_input_size()
        if min(shape) < smallest:
            raise ConfigError(f'--shape {shape[0]} {shape[1]} is too small for CvT: each side '
                              f'must be at least {smallest} pixels')
        inputs = torch.randn(args.batch, 3, *shape)
        title = f'CvT backbone preset {args.model.lower()}'
    elif osp.isfile(args.model):
        model, inputs, scope = tensor_forward(args.model, args.shape, args.batch)
        title = f'{args.model} ({scope} model, backbone + neck + heads)'
    else:
        raise ConfigError(f'{args.model!r} is neither a CvT preset '
                          f'({", ".join(CvT.arch_settings)}) nor a config file')
    print(count_flops(model, inputs).summary(title))


if __name__ == '__main__':
    run_main(main)
