"""Whole detectors and segmentors through mmdeploy to ONNX Runtime, and the checks of the file.

* :func:`export_with_mmdeploy`: mmdeploy's own ``torch2onnx`` on a model config, a
  checkpoint and a deploy config (``configs/deploy/``), with CvT's rewrites registered
  (:mod:`.mmdeploy_rewrites`) and, for the export's duration only, what mmdeploy 1.3.1 needs
  of a torch newer than it (:func:`torch_for_mmdeploy`);
* :func:`check_with_mmdeploy`: at each check image, the ONNX model in onnxruntime against
  mmdeploy's PyTorch model (the same rewritten forward that was exported: a tight check), and
  mmdeploy's deployed model against plain mmdet / mmseg (the differences mmdeploy's own head
  rewrites make, reported).

Needs the ``[mmdeploy]`` extra and mmdeploy itself (see :data:`MMDEPLOY_INSTALL`).
"""
from __future__ import annotations

import contextlib
import copy
import importlib
import inspect
import os.path as osp
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from onnx_export import ExportError, require_packages

#: How mmdeploy is installed: its wheel pins protobuf<=3.20.2, which no onnx of the
#: [deploy] extra accepts, so it goes in without its dependencies, and the [mmdeploy]
#: extra brings those it imports.
MMDEPLOY_INSTALL = 'pip install -e .[deploy,mmdeploy] && pip install --no-deps mmdeploy==1.3.1'
#: The modules an export imports, as they are imported.
MMDEPLOY_PACKAGES = ('mmdeploy', 'aenum', 'prettytable', 'multiprocess', 'onnxruntime')
#: Largest difference between onnxruntime and mmdeploy's PyTorch model: boxes over the
#: largest box coordinate, scores and mask probabilities absolute.
TOLERANCE = 1e-4
#: Least share of equal pixels between onnxruntime's label map and mmdeploy's PyTorch one.
PIXEL_AGREEMENT = 0.999
#: IoU at which two detections of one label are the same detection.
MATCH_IOU = 0.5


def require_mmdeploy() -> None:
    """Import mmdeploy and what it needs (:data:`MMDEPLOY_PACKAGES`) or name the missing one."""
    require_packages(MMDEPLOY_PACKAGES, f'whole-model deployment needs mmdeploy and the '
                                        f'[deploy,mmdeploy] extras ({MMDEPLOY_INSTALL})')


def _cast_long(g, x, non_blocking=False):  # noqa: ANN001 (a TorchScript symbolic)
    from torch._C import _onnx
    return g.op('Cast', x, to_i=_onnx.TensorProtoDataType.INT64)


@contextlib.contextmanager
def torch_for_mmdeploy() -> Iterator[None]:
    """What mmdeploy 1.3.1 needs of a newer torch, restored on exit.

    mmdeploy drives the TorchScript exporter: since torch 2.9 ``torch.onnx.export`` uses the
    ``torch.export``-based one unless told ``dynamo=False``, and its RoIAlign symbolic imports
    ``_cast_Long`` from ``torch.onnx.symbolic_opset9``, which torch has removed.
    """
    opset9 = importlib.import_module('torch.onnx.symbolic_opset9')
    export = torch.onnx.export
    added_cast = not hasattr(opset9, '_cast_Long')

    def torchscript_export(*args, **kwargs):
        kwargs.setdefault('dynamo', False)
        return export(*args, **kwargs)

    if 'dynamo' in inspect.signature(export).parameters:
        torch.onnx.export = torchscript_export
    if added_cast:
        opset9._cast_Long = _cast_long
    try:
        yield
    finally:
        torch.onnx.export = export
        if added_cast:
            del opset9._cast_Long


def _configs(model_cfg: str, deploy_cfg: str):
    from mmdeploy.utils import load_config
    for path in (model_cfg, deploy_cfg):
        if not osp.isfile(path):
            raise ExportError(f'config file {path!r} does not exist')
    deploy, model = load_config(deploy_cfg, model_cfg)
    scope = model.get('default_scope')
    codebase = deploy.get('codebase_config', {}).get('type')
    if scope not in ('mmdet', 'mmseg'):
        raise ExportError(f'{model_cfg} has default_scope {scope!r}: whole-model '
                          f'deployment takes an mmdet or mmseg config')
    if codebase != scope:
        raise ExportError(f'{deploy_cfg} deploys {codebase} models, but {model_cfg} is an '
                          f'{scope} config')
    return deploy, model


def export_with_mmdeploy(model_cfg: str, checkpoint: str, deploy_cfg: str, out_dir: str,
                         image: np.ndarray) -> tuple[str, float]:
    """Export a whole detector or segmentor with mmdeploy.

    Args:
        model_cfg: An mmdet or mmseg config.
        checkpoint: Its trained weights (read through the project's decoder once
            :func:`~cvt_backbone.training.use_safe_loading` ran, as the tool does).
        deploy_cfg: An mmdeploy deploy config of the same codebase.
        out_dir: Where ``end2end.onnx`` goes.
        image: The export image ``(H, W, 3)`` uint8 BGR.

    Returns:
        The ONNX file and the export's wall time in seconds.
    """
    from mmdeploy.apis import torch2onnx

    import cvt_backbone.deploy.mmdeploy_rewrites  # noqa: F401  (registers the rewrites)

    deploy, model = _configs(model_cfg, deploy_cfg)
    save_file = deploy.onnx_config.save_file
    start = time.perf_counter()
    with torch_for_mmdeploy():
        torch2onnx(image, out_dir, save_file, deploy, model, checkpoint, 'cpu')
    return osp.join(out_dir, save_file), time.perf_counter() - start


@dataclass
class SizeCheck:
    """The checks at one check image.

    Attributes:
        name: What the image is for (``export size``, ``non-square``, ``odd height``).
        input_shape: The model input ``(B, 3, H, W)`` after the data preprocessor.
        image_shape: The resized image ``(h, w)`` inside it (smaller: padded).
        passed: Whether onnxruntime matched mmdeploy's PyTorch model.
        versus_mmdeploy: That comparison, in words.
        versus_plain: The deployed model against plain mmdet / mmseg, in words.
    """
    name: str
    input_shape: tuple[int, ...]
    image_shape: tuple[int, int]
    passed: bool
    versus_mmdeploy: str
    versus_plain: str

    def describe(self) -> str:
        size = 'x'.join(map(str, self.input_shape[2:]))
        padded = (f', image {self.image_shape[0]}x{self.image_shape[1]} padded'
                  if tuple(self.input_shape[2:]) != tuple(self.image_shape) else '')
        verdict = 'ok' if self.passed else 'FAILED'
        return (f'{self.name} ({size}{padded}): onnxruntime vs mmdeploy PyTorch: '
                f'{self.versus_mmdeploy} {verdict}; deployed vs plain: {self.versus_plain}')


def _box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    lt, rb = torch.max(a[:, None, :2], b[None, :, :2]), torch.min(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area = lambda t: (t[:, 2:] - t[:, :2]).clamp(min=0).prod(-1)  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None] - inter).clamp(min=1e-12)


def _pairs_by_cost(cost: torch.Tensor, labels_a: torch.Tensor, labels_b: torch.Tensor,
                   limit: float) -> list[tuple[int, int]]:
    """Pairs ``(i, j)`` of the same label by increasing ``cost[i, j]`` (at most ``limit``),
    each row and column in at most one pair."""
    cost = cost.float().masked_fill(labels_a[:, None] != labels_b[None], float('inf'))
    pairs = []
    while cost.numel():
        i, j = divmod(int(cost.argmin()), cost.shape[1])
        if not cost[i, j] <= limit:
            break
        pairs.append((i, j))
        cost[i, :], cost[:, j] = float('inf'), float('inf')
    return pairs


def match_detections(boxes_a: torch.Tensor, labels_a: torch.Tensor, boxes_b: torch.Tensor,
                     labels_b: torch.Tensor, min_iou: float = MATCH_IOU
                     ) -> list[tuple[int, int]]:
    """Pairs ``(i, j)`` of the same label, greedily by IoU (best first), each at least
    ``min_iou``; every detection is in at most one pair."""
    if not len(boxes_a) or not len(boxes_b):
        return []
    iou = _box_iou(boxes_a.float(), boxes_b.float())
    return _pairs_by_cost(-iou, labels_a, labels_b, -min_iou)


def _tight_detections(ort: list[np.ndarray], ref: tuple[torch.Tensor, ...]
                      ) -> tuple[bool, str]:
    """onnxruntime's ``dets, labels, masks`` against mmdeploy's PyTorch ones, in any order
    (equal scores may come out in either order)."""
    (dets, labels, masks), (ref_dets, ref_labels, ref_masks) = ort, ref
    dets, labels, masks = torch.from_numpy(dets[0]), torch.from_numpy(labels[0]), \
        torch.from_numpy(masks[0])
    ref_dets, ref_labels, ref_masks = ref_dets[0], ref_labels[0], ref_masks[0]
    # rows of score 0 only pad the outputs (every kept detection scores above the threshold)
    kept, ref_kept = dets[:, 4] > 0, ref_dets[:, 4] > 0
    dets, labels, masks = dets[kept], labels[kept], masks[kept]
    ref_dets, ref_labels, ref_masks = ref_dets[ref_kept], ref_labels[ref_kept], \
        ref_masks[ref_kept]
    if len(dets) != len(ref_dets):
        return False, f'{len(dets)} detections, PyTorch {len(ref_dets)}'
    if not len(dets):
        return True, 'no detections in either'
    # each detection with the closest one of its label (box and score): equal scores may
    # come out in either order
    distance = (dets[:, None] - ref_dets[None]).abs().amax(-1)
    pairs = _pairs_by_cost(distance, labels, ref_labels, torch.finfo(torch.float32).max)
    if len(pairs) != len(dets):
        return False, f'{len(dets) - len(pairs)} of {len(dets)} detections have no ' \
                      f'counterpart of their label'
    i, j = map(list, zip(*pairs))
    scale = float(ref_dets[:, :4].abs().max().clamp(min=1))
    box = float((dets[i, :4] - ref_dets[j, :4]).abs().max()) / scale
    score = float((dets[i, 4] - ref_dets[j, 4]).abs().max())
    mask = float((masks[i] - ref_masks[j]).abs().max())
    worst = max(box, score, mask)
    return worst <= TOLERANCE, (f'{len(dets)} detections, boxes {box:.2g} of their scale, '
                                f'scores {score:.2g}, mask probabilities {mask:.2g}')


def _versus_plain_detections(deployed, plain) -> str:
    d, p = deployed.pred_instances, plain.pred_instances
    pairs = match_detections(d.bboxes, d.labels, p.bboxes, p.labels)
    if not pairs:
        return f'{len(d)} detections, mmdet {len(p)}, none matched'
    i, j = map(list, zip(*pairs))
    box = float((d.bboxes[i] - p.bboxes[j]).abs().max())
    score = float((d.scores[i] - p.scores[j]).abs().max())
    text = (f'{len(pairs)} of {len(d)} detections matched to mmdet\'s {len(p)} (IoU >= '
            f'{MATCH_IOU}), boxes within {box:.3g} px, scores within {score:.3g}')
    if 'masks' in d and 'masks' in p:
        dm, pm = d.masks[i].bool().flatten(1), torch.as_tensor(p.masks[j]).bool().flatten(1)
        iou = (dm & pm).sum(1) / (dm | pm).sum(1).clamp(min=1)
        text += f', mask IoU mean {float(iou.mean()):.3f} min {float(iou.min()):.3f}'
    return text


def check_with_mmdeploy(onnx_file: str, model_cfg: str, checkpoint: str, deploy_cfg: str,
                        images: dict[str, np.ndarray]) -> list[SizeCheck]:
    """Check an export at each image.

    Args:
        onnx_file: The exported model.
        model_cfg: Its model config.
        checkpoint: Its weights.
        deploy_cfg: The deploy config it was exported with.
        images: Check images ``(H, W, 3)`` uint8 BGR by name.

    Returns:
        One :class:`SizeCheck` per image.
    """
    from mmdeploy.apis import build_task_processor
    from mmdeploy.core import RewriterContext, patch_model
    from mmdeploy.utils import IR, get_backend, get_ir_config

    import cvt_backbone.deploy.mmdeploy_rewrites  # noqa: F401  (registers the rewrites)

    deploy, model = _configs(model_cfg, deploy_cfg)
    backend = get_backend(deploy).value
    processor = build_task_processor(model, deploy, 'cpu')
    torch_model = processor.build_pytorch_model(checkpoint)
    deployed = processor.build_backend_model(
        [onnx_file], data_preprocessor_updater=processor.update_data_preprocessor)
    patched = patch_model(torch_model, cfg=deploy, backend=backend, ir=IR.ONNX)
    opset = get_ir_config(deploy).get('opset_version', 11)
    detection = model.default_scope == 'mmdet'
    checks = []
    for name, image in images.items():
        data, _ = processor.create_input(image, None)  # before the data preprocessor
        with torch.no_grad():
            batch = torch_model.data_preprocessor(copy.deepcopy(data), False)
        inputs = batch['inputs']
        with RewriterContext(cfg=deploy, backend=backend, ir=IR.ONNX, opset=opset), \
                torch.no_grad():
            reference = patched.forward(inputs, data_samples=batch['data_samples'],
                                        mode='predict')
        outputs = deployed.wrapper.output_to_list(
            deployed.wrapper({deployed.input_name: inputs}))
        outputs = [output.numpy() for output in outputs]
        with torch.no_grad():
            plain = torch_model.test_step(copy.deepcopy(data))[0]
            ours = deployed.test_step(copy.deepcopy(data))[0]
        if detection:
            passed, tight = _tight_detections(outputs, reference)
            versus = _versus_plain_detections(ours, plain)
        else:
            labels = torch.from_numpy(outputs[0])
            reference = reference[0] if isinstance(reference, (tuple, list)) else reference
            share = float((labels == reference).float().mean())
            passed = share >= PIXEL_AGREEMENT
            tight = f'{100 * share:.2f}% of pixels equal'
            same = ours.pred_sem_seg.data == plain.pred_sem_seg.data
            versus = f'{100 * float(same.float().mean()):.2f}% of pixels equal to mmseg\'s'
        image_shape = tuple(data['data_samples'][0].img_shape)
        checks.append(SizeCheck(name, tuple(inputs.shape), image_shape, passed, tight,
                                versus))
    return checks
