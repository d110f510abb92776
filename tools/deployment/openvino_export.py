"""OpenVINO as a deployment target: the exported ONNX file as an OpenVINO model, checked.

* :func:`save_openvino`: read the ONNX file that :func:`onnx_export.export_onnx`
  wrote and save it as OpenVINO IR (``.xml`` + ``.bin``), weights kept in fp32;
* :func:`check_openvino`: OpenVINO's CPU plugin against PyTorch at given input sizes, in
  f32 (within :data:`onnx_export.TOLERANCE` of the output scale) and in bf16
  (within :data:`BF16_TOLERANCE`), the precision the plugin actually ran being reported:
  on a CPU without native bf16 it runs f32 whatever the hint.

Needs the ``[openvino]`` extra.
"""
from __future__ import annotations

import torch

from onnx_export import TOLERANCE, CheckResult, ExportTarget, compare, require_packages

#: The largest relative difference to PyTorch fp32 a bf16 run may have (over the output
#: scale).
BF16_TOLERANCE = 2e-2
#: OpenVINO's names of the precisions the check runs, with their tolerances.
PRECISIONS = {'f32': TOLERANCE, 'bf16': BF16_TOLERANCE}


def require_openvino() -> None:
    """Import openvino, or raise :class:`onnx_export.ExportError` naming the
    extra."""
    require_packages(('openvino', ), 'OpenVINO models need the [openvino] extra '
                                     '(pip install -e .[openvino])')


def save_openvino(onnx_path: str, xml_path: str) -> None:
    """Convert an ONNX file to OpenVINO IR: ``xml_path`` and the ``.bin`` beside it.

    The weights stay fp32 (OpenVINO would otherwise store them as fp16); the precision of
    a run is chosen when the model is compiled.
    """
    import openvino as ov

    ov.save_model(ov.Core().read_model(onnx_path), xml_path, compress_to_fp16=False)


def compile_openvino(path: str, precision: str = 'f32', threads: int | None = None):
    """An OpenVINO CPU model compiled for latency.

    Args:
        path: An ``.xml`` or ``.onnx`` file.
        precision: ``'f32'`` or ``'bf16'`` (OpenVINO's ``INFERENCE_PRECISION_HINT``).
        threads: CPU threads (default: OpenVINO's choice).

    Returns:
        The compiled model; its ``INFERENCE_PRECISION_HINT`` property says what it runs.
    """
    import openvino as ov

    config = {'INFERENCE_PRECISION_HINT': precision, 'PERFORMANCE_HINT': 'LATENCY'}
    if threads:
        config['INFERENCE_NUM_THREADS'] = threads
    return ov.Core().compile_model(path, 'CPU', config)


def effective_precision(compiled) -> str:
    """The precision a compiled OpenVINO CPU model runs in (``'f32'`` or ``'bf16'``)."""
    return compiled.get_property('INFERENCE_PRECISION_HINT').get_type_name()


def check_openvino(path: str, target: ExportTarget, shapes: list[tuple[int, ...]],
                   seed: int = 0) -> dict[str, list[CheckResult]]:
    """Run an OpenVINO model and PyTorch (fp32) on the same random inputs, in each of
    :data:`PRECISIONS`.

    Args:
        path: The ``.xml`` (or ``.onnx``) file.
        target: What was exported.
        shapes: Input shapes ``(B, 3, H, W)``.
        seed: Seed of the inputs.

    Returns:
        Per precision that the CPU runs (``'f32'``, and ``'bf16'`` where the CPU has it),
        one result per shape, with that precision's tolerance.
    """
    generator = torch.Generator().manual_seed(seed)
    inputs = [torch.randn(*shape, generator=generator) for shape in shapes]
    with torch.no_grad():
        references = [target.module(x) for x in inputs]
    results = {}
    for precision, tolerance in PRECISIONS.items():
        compiled = compile_openvino(path, precision)
        ran = effective_precision(compiled)
        if ran != precision:  # no native bf16 here: the f32 run stands for it
            continue
        request = compiled.create_infer_request()
        results[precision] = [
            compare([request.infer({0: x.numpy()})[out] for out in compiled.outputs],
                    refs, target.output_names, tuple(x.shape), tolerance=tolerance,
                    runtime=f'OpenVINO {precision}')
            for x, refs in zip(inputs, references)]
    return results
