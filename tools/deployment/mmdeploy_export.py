"""Deploy a whole CvT detector or segmentor with mmdeploy to ONNX Runtime, and check it.

    python tools/deployment/mmdeploy_export.py CONFIG CHECKPOINT OUT_DIR
    python tools/deployment/mmdeploy_export.py configs/demo/mask-rcnn_cvt-tiny_fpn_shapes.py \\
        work_dirs/demo/mask_rcnn/epoch_5.pth work_dirs/deploy/mask_rcnn

mmdeploy exports the whole model (for Mask R-CNN: RPN, box and mask heads and NMS; for
UperNet: the label map) as ``OUT_DIR/end2end.onnx`` with dynamic batch, height and width,
using the deploy config of the model's toolbox under ``configs/deploy/`` (``--deploy-config``
picks another) and CvT's rewrites (``cvt_backbone/deploy/mmdeploy_rewrites.py``).

The tool then checks the file at three images made from ``--image`` (default: a drawn
picture of shapes): as it is (the export size), cut to half its height (non-square), and
resized to an odd height (padded by the data preprocessor where the config pads). At each,
onnxruntime must match mmdeploy's own PyTorch model (the rewritten forward that was
exported): detections within 1e-4 (boxes relative to their scale, scores and mask
probabilities absolute), label maps on 99.9% of the pixels; the tool fails otherwise. It
also reports how the deployed model differs from plain mmdet / mmseg: matched detections,
box and score differences and mask IoU, or the share of equal pixels.

Needs mmdeploy and the ``[deploy,mmdeploy]`` extras (docs/deployment.md). The exporters'
own warnings are counted, not shown, unless ``--verbose``.
"""
from __future__ import annotations

import argparse
import os.path as osp

from cvt_backbone.apis import config_scope, load_config
from cvt_backbone.checkpoint import check_local_path
from cvt_backbone.errors import run_main
from cvt_backbone.training import use_safe_loading
from mmdeploy_check import check_with_mmdeploy, export_with_mmdeploy, require_mmdeploy
from onnx_export import ExportError, quiet_exporters

DEPLOY_CONFIGS = {
    'mmdet': 'configs/deploy/instance-seg_onnxruntime_dynamic.py',
    'mmseg': 'configs/deploy/segmentation_onnxruntime_dynamic.py',
}
ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help='an mmdet or mmseg config')
    parser.add_argument('checkpoint', help='its trained weights')
    parser.add_argument('out_dir', help='where end2end.onnx goes')
    parser.add_argument('--deploy-config', help='an mmdeploy deploy config (default: '
                        f'{DEPLOY_CONFIGS["mmdet"]} or {DEPLOY_CONFIGS["mmseg"]})')
    parser.add_argument('--image', help='the export and check image (default: a drawn '
                        'picture of shapes, 128x128)')
    parser.add_argument('--verbose', action='store_true',
                        help="show the exporters' own warnings and log lines")
    return parser.parse_args()


def shapes_picture(size: int = 128):
    """A ``(size, size, 3)`` uint8 BGR picture: a circle, a square and a triangle on a
    gradient, the kind of scene the demo models see, with a photo's noise: flat regions
    give proposals of equal scores, whose order onnxruntime and PyTorch break differently,
    and the checks would compare different detections."""
    import cv2
    import numpy as np

    ramp = np.linspace(60, 200, size, dtype=np.uint8)
    image = np.ascontiguousarray(np.stack([np.add.outer(ramp, ramp) // 2] * 3, axis=-1))
    cv2.circle(image, (size // 4, size // 3), size // 7, (75, 25, 230), -1)
    cv2.rectangle(image, (size // 2, size // 8), (size * 7 // 8, size // 2), (75, 180, 60), -1)
    triangle = np.array([[size // 5, size * 7 // 8], [size // 2, size // 2],
                         [size * 4 // 5, size * 7 // 8]], dtype=np.int32)
    cv2.fillPoly(image, [triangle], (200, 130, 0))
    noise = np.random.default_rng(0).integers(-24, 25, image.shape)
    return np.clip(image + noise, 0, 255).astype(np.uint8)


def read_image(path: str | None):
    """The image as ``(H, W, 3)`` uint8 BGR, as mmdeploy takes it."""
    import cv2

    if path is None:
        return shapes_picture()
    image = cv2.imread(check_local_path(path)) if osp.isfile(path) else None
    if image is None:
        raise ExportError(f'--image {path!r} is not an image file')
    return image


def check_images(image) -> dict:
    """The export image, a non-square cut of it, and one resized to an odd height."""
    import cv2

    height, width = image.shape[:2]
    odd = max(3, height * 5 // 7) | 1
    return {'export size': image,
            'non-square': image[:max(3, height // 2)],
            'odd height': cv2.resize(image, (width, odd), interpolation=cv2.INTER_LINEAR)}


def main() -> None:
    args = parse_args()
    scope = config_scope(load_config(args.config), args.config)
    if scope not in DEPLOY_CONFIGS:
        raise ExportError(f'{args.config} has default_scope {scope!r}: this tool deploys '
                          f'mmdet and mmseg models (tools/deployment/pytorch2onnx.py exports '
                          f'classifiers)')
    checkpoint = check_local_path(args.checkpoint)
    deploy_cfg = args.deploy_config or osp.join(ROOT, DEPLOY_CONFIGS[scope])
    require_mmdeploy()
    use_safe_loading()
    images = check_images(read_image(args.image))
    print(f'Exporting {args.config} with mmdeploy ({osp.relpath(deploy_cfg)})', flush=True)
    with quiet_exporters(args.verbose):
        onnx_file, seconds = export_with_mmdeploy(args.config, checkpoint, deploy_cfg,
                                                  args.out_dir, images['export size'])
    print(f'Wrote {onnx_file} in {seconds:.1f} s; checking it at {len(images)} sizes',
          flush=True)
    with quiet_exporters(args.verbose):
        checks = check_with_mmdeploy(onnx_file, args.config, checkpoint, deploy_cfg, images)
    for check in checks:
        print(f'  {check.describe()}')
    failed = [check for check in checks if not check.passed]
    if failed:
        raise ExportError(f'onnxruntime differs from mmdeploy\'s PyTorch model at the '
                          f'{failed[0].name} image: {failed[0].versus_mmdeploy}')


if __name__ == '__main__':
    run_main(main, user_errors=(ExportError, ))
