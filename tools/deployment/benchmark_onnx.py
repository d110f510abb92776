"""onnxruntime against PyTorch on the CPU: latency and largest difference, as one table.

    python tools/deployment/benchmark_onnx.py cvt-13 --shapes 224x224 800x1344
    python tools/deployment/benchmark_onnx.py configs/demo/cvt-tiny_shapes-cls.py --shapes 64x64

Exports MODEL once with dynamic batch, height and width (as ``pytorch2onnx.py --dynamic``)
into a temporary folder, then for each input size (batch 1) runs both on the same random
input: ``--warmup`` untimed runs, then the median of ``--repeats`` timed ones. PyTorch runs
the fast inference path under ``torch.no_grad``; onnxruntime the CPU execution provider with
as many intra-op threads as PyTorch. Figures mean something only on a quiet machine.
"""
from __future__ import annotations

import argparse
import os.path as osp
import statistics
import tempfile
import time
from collections.abc import Callable

import torch

from cvt_backbone.errors import run_main
from onnx_export import (
    ExportError,
    build_target,
    compare,
    export_onnx,
    ort_session,
    require_deploy_extra,
)


def size(text: str) -> tuple[int, int]:
    """``'800x1344'`` -> ``(800, 1344)``."""
    try:
        h, w = (int(v) for v in text.lower().split('x'))
    except ValueError:
        raise argparse.ArgumentTypeError(f'a size is HxW, e.g. 224x224; got {text!r}') from None
    if min(h, w) < 1:
        raise argparse.ArgumentTypeError(f'a size needs positive sides, got {text!r}')
    return h, w


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('model', nargs='?', default='cvt-13',
                        help='a CvT preset or a config file (default: cvt-13)')
    parser.add_argument('--checkpoint', help='weights (default: random weights)')
    parser.add_argument('--shapes', type=size, nargs='+', default=[(224, 224), (800, 1344)],
                        metavar='HxW', help='input sizes (default: 224x224 800x1344)')
    parser.add_argument('--repeats', type=int, default=5, help='timed runs per cell')
    parser.add_argument('--warmup', type=int, default=2, help='untimed runs per cell first')
    return parser.parse_args()


def median_seconds(run: Callable[[], object], warmup: int, repeats: int) -> float:
    """Median wall time of ``repeats`` calls of ``run`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def milliseconds(seconds: float) -> str:
    return f'{seconds * 1e3:.1f} ms' if seconds < 10 else f'{seconds:.2f} s'


def main() -> None:
    args = parse_args()
    require_deploy_extra()
    if args.repeats < 1 or args.warmup < 0:
        raise ExportError('--repeats must be at least 1 and --warmup at least 0')
    target = build_target(args.model, args.checkpoint)
    too_small = [s for s in args.shapes if min(s) < target.min_size]
    if too_small:
        raise ExportError(f'--shapes {too_small[0][0]}x{too_small[0][1]} is too small: each '
                          f'side must be at least {target.min_size} pixels')
    threads = torch.get_num_threads()
    rows = ['| input | PyTorch CPU | onnxruntime CPU | PyTorch / onnxruntime | max abs diff | '
            'relative to output scale |', '|---|---|---|---|---|---|']
    with tempfile.TemporaryDirectory() as tmp:
        path = osp.join(tmp, 'model.onnx')
        print(f'Exporting {target.title} (dynamic) ...', flush=True)
        export_onnx(target, path, args.shapes[0], dynamic=True)
        session = ort_session(path, threads)
        for h, w in args.shapes:
            x = torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(0))
            feed = {'input': x.numpy()}
            print(f'  {h}x{w} ...', flush=True)
            with torch.no_grad():
                references = target.module(x)
                torch_s = median_seconds(lambda x=x: target.module(x), args.warmup,
                                         args.repeats)
            ort_s = median_seconds(lambda feed=feed: session.run(None, feed), args.warmup,
                                   args.repeats)
            result = compare(session.run(None, feed), references, target.output_names,
                             tuple(x.shape))
            rows.append(f'| 1x3x{h}x{w} | {milliseconds(torch_s)} | {milliseconds(ort_s)} | '
                        f'{torch_s / ort_s:.2f}x | {result.max_abs:.3g} | '
                        f'{result.relative:.3g} ({result.worst}) |')
    print(f'\n{target.title}, fp32, {threads} threads for both, median of {args.repeats} '
          f'runs after {args.warmup} warm-up runs\n')
    print('\n'.join(rows))


if __name__ == '__main__':
    run_main(main, user_errors=(ExportError, ))
