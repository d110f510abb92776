"""Exporting CvT models to ONNX and checking the export with onnxruntime.

* :func:`build_target`: what to export for a preset name or a config file (the backbone, a
  whole classifier, or a detector's / segmentor's backbone + neck), as an ``nn.Module``
  with named outputs;
* :func:`export_onnx`: the export itself, through PyTorch's ``torch.export``-based exporter,
  with every computation on weights alone folded into the stored weights;
* :func:`check_export`: onnxruntime against PyTorch at given input sizes.

The graph is the model's inference form: the BatchNorms folded into the depthwise
convolutions (:meth:`~cvt_backbone.CvT.switch_to_deploy`) and, on the fast path
(:meth:`~cvt_backbone.CvT.use_fast_kernels`), attention as one ONNX ``Attention`` node
(opset 23) with the CvT scale, ``embed_dims ** -0.5`` over the whole stage width.
"""
from __future__ import annotations

import contextlib
import importlib
import logging
import os.path as osp
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from cvt_backbone import CvT
from cvt_backbone.apis import DEFAULT_SHAPES, build_model, load_checkpoint
from cvt_backbone.checkpoint import load_cvt_weights
from cvt_backbone.checkpoint.write import atomic_write_bytes

#: What ``--dynamic`` makes dynamic: input axis -> name.
DYNAMIC_AXES = {0: 'batch', 2: 'height', 3: 'width'}
#: The largest relative difference to PyTorch an export may have (over the output scale).
TOLERANCE = 1e-4
#: The default opset: the first with an ``Attention`` operator (SDPA maps onto it).
DEFAULT_OPSET = 23
#: The packages of the ``[deploy]`` extra, as they are imported.
DEPLOY_PACKAGES = ('onnx', 'onnxruntime', 'onnxscript')
#: protobuf's limit on one ONNX file; larger models keep their weights in a side file.
PROTOBUF_LIMIT = 2 ** 31 - 1


class ExportError(ValueError):
    """A model that cannot be exported as asked, or an export that fails its check."""


def require_packages(names: tuple[str, ...], needed_for: str) -> None:
    """Import ``names`` once, so that a missing one is named up front.

    Raises:
        ExportError: ``'<name> is not installed: <needed_for>'``.
    """
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError:
            raise ExportError(f'{name} is not installed: {needed_for}') from None


def require_deploy_extra() -> None:
    """Import the ``[deploy]`` packages (:data:`DEPLOY_PACKAGES`) or name the missing one."""
    require_packages(DEPLOY_PACKAGES, 'the ONNX tools need the [deploy] extra '
                                      '(pip install -e .[deploy])')


@dataclass
class ExportTarget:
    """A module to export and what it is.

    Attributes:
        module: Maps images ``(B, 3, H, W)`` to a tuple of tensors, in eval mode.
        output_names: One name per output.
        title: What the module is, for the tool's report.
        default_shape: Input ``(H, W)`` when none is given.
        min_size: The smallest input side the module takes.
    """
    module: nn.Module
    output_names: list[str]
    title: str
    default_shape: tuple[int, int]
    min_size: int


class ClassifierLogits(nn.Module):
    """An mmpretrain classifier as images ``(B, 3, H, W)`` -> ``(logits (B, classes),)``."""

    def __init__(self, classifier: nn.Module) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        return (self.classifier(x, mode='tensor'),)


class BackboneNeck(nn.Module):
    """A detector's or segmentor's ``extract_feat``: backbone, then neck if it has one.

    Images ``(B, 3, H, W)`` -> the neck's maps (the backbone's without a neck).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.model.extract_feat(x))


def _num_outputs(module: nn.Module, size: int) -> int:
    with torch.no_grad():
        return len(module(torch.zeros(1, 3, size, size)))


def build_target(model: str, checkpoint: str | None = None) -> ExportTarget:
    """What to export for ``model``: a CvT preset name or a config file.

    * a preset: the CvT backbone, one output per stage (``stage0`` ...);
    * an mmpretrain config: the whole classifier (``logits``);
    * an mmdet or mmseg config: backbone + neck (``feat0`` ...); heads and post-processing
      are mmdeploy's job.

    A CvT backbone is switched to its deploy form (:meth:`CvT.switch_to_deploy`) after its
    weights are loaded.

    Args:
        model: Preset name or config path.
        checkpoint: Weights: for a preset any CvT checkpoint (official, transformers, this
            package's); for a config a whole-model checkpoint of it. None: random weights.

    Raises:
        ExportError: ``model`` is neither a preset nor a config file, or the config is of no
            supported toolbox.
        FileNotFoundError, CheckpointError: the checkpoint is missing or does not fit.
    """
    if model.lower() in CvT.arch_settings:
        backbone = CvT(arch=model.lower()).eval()
        if checkpoint:
            load_cvt_weights(backbone, checkpoint)
        backbone.switch_to_deploy()
        names = [f'stage{i}' for i in backbone.out_indices]
        return ExportTarget(backbone, names, f'CvT backbone {model.lower()}', (224, 224),
                            backbone.min_input_size())
    if not osp.isfile(model):
        raise ExportError(f'{model!r} is neither a CvT preset ({", ".join(CvT.arch_settings)}) '
                          f'nor a config file')
    built, scope = build_model(model)
    if checkpoint:
        load_checkpoint(built, checkpoint)
    # Another backbone states no smallest input: the exporter or the check will say.
    min_size = 1
    if isinstance(built.backbone, CvT):
        min_size = built.backbone.switch_to_deploy().min_input_size()
    if scope == 'mmpretrain':
        return ExportTarget(ClassifierLogits(built).eval(), ['logits'],
                            f'{model} (whole classifier: logits)', DEFAULT_SHAPES[scope],
                            min_size)
    module = BackboneNeck(built).eval()
    names = [f'feat{i}' for i in range(_num_outputs(module, max(min_size, 64)))]
    part = 'backbone + neck' if getattr(built, 'with_neck', False) else 'backbone'
    return ExportTarget(module, names, f'{model} ({scope} {part}; the heads are mmdeploy\'s job)',
                        DEFAULT_SHAPES[scope], min_size)


#: The loggers of the exporters, quiet below WARNING unless verbose.
EXPORTER_LOGGERS = ('mmdeploy', 'torch.onnx', 'onnxscript', 'torch.export')


@contextlib.contextmanager
def quiet_exporters(verbose: bool = False) -> Iterator[None]:
    """Keep the exporters' warnings (TracerWarnings, deprecations) and info logs off the
    terminal, and say in one line how many warnings there were; ``verbose`` shows them
    all."""
    if verbose:
        yield
        return
    loggers = [logging.getLogger(name) for name in EXPORTER_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
    kinds = sorted({w.category.__name__ for w in caught})
    if caught:
        print(f'({len(caught)} warnings of the exporters hidden: {", ".join(kinds)}; '
              f'--verbose shows them)', flush=True)


def export_inputs(shape: tuple[int, int], dynamic: bool) -> torch.Tensor:
    """The example input of an export: batch 2 when dynamic (``torch.export`` would fix a
    batch of 1 as a constant), else batch 1."""
    return torch.randn(2 if dynamic else 1, 3, *shape)


def _fold_weight_computations(program, module: nn.Module) -> None:
    """Fold every computation on weights alone into the stored weights: the exporter's own
    pass folds only tensors of up to 8192 values."""
    import onnxscript.optimizer

    largest = max(t.numel() for t in [*module.parameters(), *module.buffers()])
    onnxscript.optimizer.optimize(program.model, input_size_limit=largest,
                                  output_size_limit=largest)


def export_onnx(target: ExportTarget, path: str, shape: tuple[int, int], dynamic: bool = False,
                opset: int = DEFAULT_OPSET) -> None:
    """Export ``target.module`` to ``path``, written atomically.

    Args:
        target: What to export.
        path: The ``.onnx`` file.
        shape: Example input ``(H, W)``; the input size of a static export.
        dynamic: Make batch, height and width dynamic (:data:`DYNAMIC_AXES`).
        opset: ONNX opset.

    Raises:
        ExportError: the exporter failed; the message gives its reason.
    """
    dims = {i: torch.export.Dim(name) for i, name in DYNAMIC_AXES.items()} if dynamic else None
    try:
        with torch.no_grad():
            program = torch.onnx.export(
                target.module, (export_inputs(shape, dynamic),), dynamo=True,
                opset_version=opset, input_names=['input'], output_names=target.output_names,
                dynamic_shapes={'x': dims} if dims else None, verbose=False)
    except Exception as err:  # the exporter raises many kinds; all mean "cannot export"
        raise ExportError(f'torch.onnx.export failed: {str(err).splitlines()[0]}') from err
    _fold_weight_computations(program, target.module)
    proto = program.model_proto
    if proto.ByteSize() > PROTOBUF_LIMIT:
        program.save(path, external_data=True)
    else:
        atomic_write_bytes(proto.SerializeToString(), path)


def second_shape(shape: tuple[int, int], min_size: int) -> tuple[int, int]:
    """A second check size: non-square, neither side a multiple of 16, about 3/4 of
    ``shape``."""
    h, w = (max(min_size, 3 * s // 4 + 1) for s in shape)
    while h % 16 == 0:
        h += 1
    while w % 16 == 0 or w == h:
        w += 1
    return h, w


@dataclass
class CheckResult:
    """A runtime against PyTorch at one input size.

    Attributes:
        shape: The input shape ``(B, 3, H, W)``.
        max_abs: Largest absolute difference over all outputs.
        relative: Largest, over the outputs, of each output's largest absolute difference
            over its largest PyTorch magnitude.
        worst: The output with that relative difference.
        tolerance: The largest ``relative`` that passes.
        runtime: What ran the exported model, as the report names it.
    """
    shape: tuple[int, ...]
    max_abs: float
    relative: float
    worst: str
    tolerance: float = TOLERANCE
    runtime: str = 'ONNX'

    @property
    def passed(self) -> bool:
        return self.relative <= self.tolerance

    def describe(self) -> str:
        size = 'x'.join(map(str, self.shape))
        verdict = 'ok' if self.passed else f'FAILED (> {self.tolerance:g})'
        return (f'{size}: max |{self.runtime} - PyTorch| {self.max_abs:.3g}, relative to the '
                f'output scale {self.relative:.3g} ({self.worst}) {verdict}')


def compare(outputs: list[np.ndarray], references: tuple[torch.Tensor, ...],
            names: list[str], shape: tuple[int, ...], tolerance: float = TOLERANCE,
            runtime: str = 'ONNX') -> CheckResult:
    """Compare a runtime's outputs with PyTorch's (same order)."""
    if len(outputs) != len(references):
        raise ExportError(f'the {runtime} model has {len(outputs)} outputs, PyTorch gives '
                          f'{len(references)}')
    max_abs, relative, worst = 0., -1., names[0]
    for name, out, ref in zip(names, outputs, references):
        ref = ref.numpy()
        if out.shape != ref.shape:
            raise ExportError(f'output {name} at input {shape}: {runtime} shape {out.shape}, '
                              f'PyTorch {ref.shape}')
        diff = float(np.abs(out - ref).max())
        rel = diff / max(float(np.abs(ref).max()), 1e-12)
        max_abs = max(max_abs, diff)
        if rel > relative:
            relative, worst = rel, name
    return CheckResult(shape, max_abs, relative, worst, tolerance, runtime)


def ort_session(path: str, threads: int | None = None):
    """An onnxruntime CPU session for ``path`` (``threads`` intra-op threads)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(path, options, providers=['CPUExecutionProvider'])


def check_export(path: str, target: ExportTarget, shapes: list[tuple[int, ...]],
                 seed: int = 0) -> list[CheckResult]:
    """Run the ONNX file with onnxruntime and PyTorch on the same random inputs.

    Args:
        path: The exported file.
        target: What was exported.
        shapes: Input shapes ``(B, 3, H, W)``.
        seed: Seed of the inputs.

    Returns:
        One result per shape.
    """
    session = ort_session(path)
    generator = torch.Generator().manual_seed(seed)
    results = []
    for shape in shapes:
        x = torch.randn(*shape, generator=generator)
        with torch.no_grad():
            references = target.module(x)
        outputs = session.run(None, {'input': x.numpy()})
        results.append(compare(outputs, references, target.output_names, shape))
    return results
