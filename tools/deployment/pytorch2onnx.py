"""Export a CvT preset, or the model of a config, to ONNX and check the file with onnxruntime.

    python tools/deployment/pytorch2onnx.py cvt-13 cvt-13.onnx --dynamic
    python tools/deployment/pytorch2onnx.py cvt-13 cvt-13.onnx --dynamic --openvino
    python tools/deployment/pytorch2onnx.py cvt-13 cvt-13.onnx --checkpoint CvT-13-224x224-IN-1k.pth
    python tools/deployment/pytorch2onnx.py configs/demo/cvt-tiny_shapes-cls.py cls.onnx \\
        --checkpoint work_dirs/demo/cls/epoch_12.pth --dynamic

What is exported:

* a preset (cvt-13, cvt-21, cvt-w24): the backbone, one output per stage (``stage0`` ...);
* an mmpretrain config: the whole classifier (``logits``);
* an mmdet or mmseg config: backbone + neck (``feat0`` ...). The heads, with their
  proposals, NMS and resizing, are mmdeploy's job.

The input (``input``, ``(B, 3, H, W)``) is the image after the config's data preprocessor
(RGB, normalised by its mean and std; ImageNet's for a preset). ``--dynamic`` makes batch,
height and width dynamic; without it the graph takes exactly batch 1 at ``--shape``.

The tool then runs the file with onnxruntime on random inputs at the export shape and, for a
dynamic export, at a second, non-square size that is not a multiple of 16, prints the
largest difference to PyTorch, and fails when it exceeds 1e-4 of the output scale.
Needs the ``[deploy]`` extra (onnx, onnxruntime, onnxscript).

``--openvino`` also writes the OpenVINO model (``cvt-13.xml`` and ``cvt-13.bin`` beside the
ONNX file, fp32 weights) and checks it the same way with OpenVINO's CPU plugin: in f32
within 1e-4 of the output scale, and in bf16 within 2e-2 where the CPU has native bf16
(AVX-512 BF16 or AMX). Needs the ``[openvino]`` extra.
"""
from __future__ import annotations

import argparse

from cvt_backbone import CvT
from cvt_backbone.errors import run_main
from onnx_export import (
    DEFAULT_OPSET,
    ExportError,
    build_target,
    check_export,
    export_inputs,
    export_onnx,
    quiet_exporters,
    require_deploy_extra,
    second_shape,
)
from openvino_export import check_openvino, require_openvino, save_openvino


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n')[0], epilog='Detector and segmentor configs export '
        'backbone + neck only: the rest is mmdeploy\'s job.')
    parser.add_argument('model', help=f'a CvT preset ({", ".join(CvT.arch_settings)}) or a '
                                      f'config file')
    parser.add_argument('output', help='the .onnx file to write')
    parser.add_argument('--checkpoint', help='weights (default: random weights, still checked)')
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'),
                        help='input height and width (default: 224 224 for presets and '
                             'classifiers, 800 1344 for mmdet, 512 512 for mmseg)')
    parser.add_argument('--dynamic', action='store_true',
                        help='dynamic batch, height and width')
    parser.add_argument('--opset', type=int, default=DEFAULT_OPSET,
                        help=f'ONNX opset (default {DEFAULT_OPSET}: attention as one '
                             f'Attention node)')
    parser.add_argument('--check-shape', type=int, nargs=2, metavar=('H', 'W'),
                        help='the second size the check runs at (dynamic exports; default: '
                             'about 3/4 of --shape, non-square, not a multiple of 16)')
    parser.add_argument('--openvino', action='store_true',
                        help='also write the OpenVINO model (.xml/.bin beside OUTPUT) and check '
                             'it in f32 and bf16 ([openvino] extra)')
    parser.add_argument('--verbose', action='store_true',
                        help="show the exporter's own warnings and log lines")
    return parser.parse_args()


def checked_shape(shape: list[int], min_size: int, option: str) -> tuple[int, int]:
    """``shape`` as ``(H, W)``, or an :class:`ExportError` naming ``option``."""
    if min(shape) < min_size:
        raise ExportError(f'{option} {shape[0]} {shape[1]} is too small: each side must be at '
                          f'least {min_size} pixels')
    return tuple(shape)


def main() -> None:
    args = parse_args()
    if not args.output.endswith('.onnx'):
        raise ExportError(f'the output must be an .onnx file, got {args.output!r}')
    target = build_target(args.model, args.checkpoint)
    shape = checked_shape(args.shape or target.default_shape, target.min_size, '--shape')
    require_deploy_extra()
    if args.openvino:
        require_openvino()
    print(f'Exporting {target.title} at {shape[0]}x{shape[1]}'
          f'{" (dynamic batch, height and width)" if args.dynamic else ""}, opset {args.opset}',
          flush=True)
    with quiet_exporters(args.verbose):
        export_onnx(target, args.output, shape, args.dynamic, args.opset)
    print(f'Wrote {args.output}; outputs: {", ".join(target.output_names)}')

    shapes = [tuple(export_inputs(shape, args.dynamic).shape)]
    if args.dynamic:
        second = (checked_shape(args.check_shape, target.min_size, '--check-shape')
                  if args.check_shape else second_shape(shape, target.min_size))
        shapes.append((1, 3, *second))
    else:
        print('Static export: checked at the export shape only (--dynamic for other sizes)')
    results = check_export(args.output, target, shapes)
    for result in results:
        print(f'  onnxruntime at {result.describe()}')
    if args.openvino:
        xml = args.output[:-len('.onnx')] + '.xml'
        save_openvino(args.output, xml)
        print(f'Wrote {xml} and its .bin (OpenVINO, fp32 weights)')
        checks = check_openvino(xml, target, shapes)
        if 'bf16' not in checks:
            print('  OpenVINO bf16: not checked, this CPU has no native bf16 (OpenVINO runs '
                  'f32 here)')
        for precision_results in checks.values():
            results += precision_results
            for result in precision_results:
                print(f'  {result.runtime} at {result.describe()}')
    failed = [r for r in results if not r.passed]
    if failed:
        raise ExportError(f'{failed[0].runtime} differs from PyTorch by {failed[0].relative:.3g} '
                          f'of the output scale at input {failed[0].shape} (tolerance '
                          f'{failed[0].tolerance:g})')


if __name__ == '__main__':
    run_main(main, user_errors=(ExportError, ))
