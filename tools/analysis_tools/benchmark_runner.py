"""Measure benchmark cases, each in a fresh subprocess of its own.

A fresh process per case keeps one case's memory (allocator caches, the transformers
port's 9 GB attention matrices) out of the next case's figures. The parent
(:class:`SubprocessRunner`) starts ``python tools/analysis_tools/benchmark_runner.py
REQUEST`` in the repository root and reads progress lines and one result line from its
output. The rows of other runtimes (onnxruntime, OpenVINO) run the export of
``tools/deployment/`` (its modules are on the worker's ``PYTHONPATH``).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn

from benchmark_cases import Case
from benchmark_probes import CudaMemory, HostMemory, matmul_rate, time_runs
from cvt_backbone import CvT

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
#: Where the worker finds the export code of the runtime rows.
DEPLOYMENT = os.path.join(ROOT, 'tools', 'deployment')
PROGRESS = '@progress '
RESULT = '@result '
DTYPES = {'fp32': torch.float32, 'fp16': torch.float16, 'bf16': torch.bfloat16}


@dataclass(frozen=True)
class Settings:
    """What every case of one benchmark run shares.

    Attributes:
        device: ``'cpu'`` or ``'cuda'``.
        threads: Intra-op threads on the CPU.
        gemm_size: Side of the square matmul that measures the device's rate.
    """

    device: str
    threads: int
    gemm_size: int = 2048


def device_name(device: str) -> str:
    """The processor or GPU, in words."""
    if device == 'cuda':
        return torch.cuda.get_device_name()
    with contextlib.suppress(OSError):
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    return platform.processor() or 'CPU'


# ---------------------------------------------------------------------------- in the worker
#: Model kinds that are another runtime running our CvT's ONNX export.
RUNTIMES = ('onnxruntime', 'openvino')


class RuntimeModel:
    """Our CvT exported to ONNX (dynamic sizes) and run by onnxruntime or OpenVINO on the
    CPU, called like the PyTorch model: a ``(B, 3, H, W)`` tensor in, numpy maps out.

    Args:
        case: The case (its model kind, arch and precision).
        threads: Intra-op threads.
        folder: Where the ONNX file is written.
    """

    def __init__(self, case: Case, threads: int, folder: str) -> None:
        from onnx_export import build_target, export_onnx, ort_session

        path = os.path.join(folder, 'model.onnx')
        export_onnx(build_target(case.spec.arch), path, (224, 224), dynamic=True)
        if case.spec.kind == 'onnxruntime':
            if case.precision != 'fp32':
                raise ValueError('onnxruntime rows run the fp32 export only')
            session = ort_session(path, threads)
            self._run = lambda x: session.run(None, {'input': x})
        else:
            from openvino_export import compile_openvino, effective_precision

            wanted = {'fp32': 'f32'}.get(case.precision, case.precision)  # OpenVINO's names
            compiled = compile_openvino(path, wanted, threads)
            if effective_precision(compiled) != wanted:
                raise ValueError(f'OpenVINO runs {effective_precision(compiled)} on this CPU, '
                                 f'not {wanted}')
            request = compiled.create_infer_request()
            self._run = lambda x: request.infer({0: x})

    def __call__(self, x: torch.Tensor):
        return self._run(x.numpy())


def build_model(case: Case) -> nn.Module:
    """The case's model with the official (CvT, port) or default (Swin) initialisation."""
    from transformers_port import port_of

    spec = case.spec
    if spec.kind == 'swin':
        from mmdet.models.backbones import SwinTransformer
        swin = SwinTransformer(with_cp=case.with_cp)  # its defaults: Swin-T
        swin.init_weights()
        return swin
    if spec.kind == 'port':
        if case.with_cp:
            raise ValueError('the transformers port has no activation checkpointing')
        return port_of(CvT(arch=spec.arch, **spec.cvt_kwargs).eval())
    model = CvT(arch=spec.arch, with_cp=case.with_cp, **spec.cvt_kwargs)
    model.init_weights()
    return model.switch_to_deploy() if spec.deploy else model


def output_tensors(output) -> list[torch.Tensor]:
    """Every tensor in a model output (tensor, tuple, list or transformers output)."""
    if isinstance(output, torch.Tensor):
        return [output]
    if hasattr(output, 'to_tuple'):
        output = output.to_tuple()
    if isinstance(output, (tuple, list)):
        return [t for item in output for t in output_tensors(item)]
    return []


def make_step(model: nn.Module, case: Case, x: torch.Tensor) -> Callable[[], None]:
    """One inference forward, or one training forward + backward, as a call.

    Training uses the sum of the outputs' means as the loss and drops the gradients after
    each step (so each step allocates them, as a training iteration does).
    """
    def autocast():
        if case.precision == 'fp32':
            return contextlib.nullcontext()
        return torch.autocast(x.device.type, dtype=DTYPES[case.precision])

    if isinstance(model, RuntimeModel):
        if case.task != 'infer':
            raise ValueError(f'{case.spec.kind} rows are inference only')
        return lambda: model(x)
    if case.task == 'infer':
        model.eval()

        def infer() -> None:
            with torch.no_grad(), autocast():
                model(x)
        return infer

    model.train()

    def train() -> None:
        with autocast():
            outputs = output_tensors(model(x))
        sum(t.float().mean() for t in outputs).backward()
        model.zero_grad(set_to_none=True)
    return train


def forward_macs(case: Case, model: nn.Module, x: torch.Tensor) -> int:
    """MACs of one forward at the case's input, attention included.

    The port computes the same function as our CvT of its arch, so ours is counted.
    """
    from flops import count_flops

    spec = case.spec
    if spec.kind == 'port' or spec.kind in RUNTIMES:
        model = CvT(arch=spec.arch, **spec.cvt_kwargs).to(x.device)
    model.eval()
    return count_flops(model, x).macs


def measure(case: Case, settings: Settings, report: Callable[[str], None],
            macs: int | None = None) -> dict:
    """Measure one case in this process.

    Order: matmul probe, build, reset the memory peak, warm-up and timed runs, read the
    memory, matmul probe again (the higher rate counts), count FLOPs unless given.

    Args:
        case: What to run.
        settings: Device, threads and matmul size.
        report: Receives progress lines.
        macs: MACs of one forward, when already known.

    Returns:
        The measurements (JSON-serialisable); FLOPs of a training step are 3x the forward.
    """
    torch.set_num_threads(settings.threads)
    device = torch.device(settings.device)
    dtype = DTYPES[case.precision]
    report('matmul probe')
    rate_before = matmul_rate(settings.gemm_size, device, dtype)
    report('building the model')
    with tempfile.TemporaryDirectory() as folder:
        if case.spec.kind in RUNTIMES:
            model = RuntimeModel(case, settings.threads, folder)
        else:
            model = build_model(case).to(device)
        x = torch.randn(case.batch, 3, case.height, case.width, device=device)
        if case.spec.compile:
            model = torch.compile(model)
        step = make_step(model, case, x)
        memory = CudaMemory() if device.type == 'cuda' else HostMemory()
        memory.start()
        first_call = None
        if case.spec.compile:
            report('first call (compiling)')
            start = time.perf_counter()
            step()
            first_call = time.perf_counter() - start
        times = time_runs(step, case.warmup, case.repeats, device, report)
    increase, process_peak = memory.increase(), memory.process_peak()
    report('matmul probe')
    rate_after = matmul_rate(settings.gemm_size, device, dtype)
    if macs is None:
        report('counting FLOPs')
        macs = forward_macs(case, build_model(case).to(device) if case.spec.compile else model,
                            x)
    latency = statistics.median(times)
    flops = 2 * macs * (3 if case.task == 'train' else 1)
    gemm = max(rate_before, rate_after)
    return dict(
        name=case.name, case=case.to_dict(), times=times, latency=latency,
        memory=memory.name, process_peak=process_peak, increase=increase, macs=macs,
        flops=flops, achieved=flops / latency / 1e9, gemm=gemm, gemm_before=rate_before,
        gemm_after=rate_after, fraction_of_gemm=flops / latency / 1e9 / gemm,
        first_call=first_call)


def worker_main(argv: list[str]) -> None:
    """Entry point of a case's subprocess: ``argv[0]`` is the JSON request."""
    request = json.loads(argv[0])
    result = measure(Case(**request['case']), Settings(**request['settings']),
                     report=lambda message: print(PROGRESS + message, flush=True),
                     macs=request.get('macs'))
    print(RESULT + json.dumps(result), flush=True)


# ---------------------------------------------------------------------------- in the parent
class SubprocessRunner:
    """Run cases one after another, each in a new Python process.

    Forward MACs are counted once per model function and input, and passed on to later
    cases of the same function.

    Args:
        settings: Shared settings.
        log: Receives progress lines.
    """

    def __init__(self, settings: Settings, log: Callable[[str], None] = print) -> None:
        self.settings = settings
        self.log = log
        self._macs: dict[tuple, int] = {}

    @staticmethod
    def _macs_key(case: Case) -> tuple:
        return case.spec.flop_key, case.batch, case.height, case.width

    def _env(self, case: Case) -> dict:
        env = dict(os.environ)
        for name in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS'):
            env[name] = str(self.settings.threads)
        env['PYTHONPATH'] = os.pathsep.join(
            [HERE, DEPLOYMENT, *filter(None, [env.get('PYTHONPATH')])])
        env.pop('MALLOC_MMAP_THRESHOLD_', None)
        if case.mmap_threshold is not None:
            env['MALLOC_MMAP_THRESHOLD_'] = str(case.mmap_threshold)
        return env

    def run(self, case: Case, label: str) -> dict:
        """Measure ``case`` in a subprocess; ``label`` prefixes its progress lines.

        Returns:
            The worker's result, or ``dict(name=..., case=..., error=...)`` if it failed.
        """
        request = dict(case=case.to_dict(), settings=dataclasses.asdict(self.settings),
                       macs=self._macs.get(self._macs_key(case)))
        command = [sys.executable, os.path.join(HERE, 'benchmark_runner.py'),
                   json.dumps(request)]
        start = time.perf_counter()
        result = None
        with tempfile.TemporaryFile('w+') as errors:
            with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=errors, text=True,
                                  env=self._env(case), cwd=ROOT) as process:
                for line in process.stdout:
                    if line.startswith(PROGRESS):
                        self.log(f'{label} {case.name}: {line[len(PROGRESS):].strip()} '
                                 f'[{time.perf_counter() - start:.0f} s]')
                    elif line.startswith(RESULT):
                        result = json.loads(line[len(RESULT):])
            if result is None:
                errors.seek(0)
                tail = errors.read().strip().splitlines()[-8:]
                reason = f'exit status {process.returncode}'
                if process.returncode in (-9, 137):
                    reason += ' (killed: out of memory?)'
                self.log(f'{label} {case.name}: FAILED, {reason}\n    ' + '\n    '.join(tail))
                return dict(name=case.name, case=case.to_dict(), error=reason)
        self._macs[self._macs_key(case)] = result['macs']
        self.log(f'{label} {case.name}: {result["latency"]:.3f} s, {result["memory"]} '
                 f'{result["process_peak"] / 1e9:.2f} GB '
                 f'(+{result["increase"] / 1e9:.2f}), {result["achieved"]:.1f} GFLOP/s = '
                 f'{100 * result["fraction_of_gemm"]:.0f}% of the matmul rate '
                 f'[{time.perf_counter() - start:.0f} s]')
        return result


if __name__ == '__main__':
    worker_main(sys.argv[1:])
