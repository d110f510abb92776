"""Latency, memory and achieved FLOP rate of CvT, transformers' CvtModel and Swin-T.

    python tools/analysis_tools/benchmark.py --out work_dirs/benchmark
    python tools/analysis_tools/benchmark.py --quick
    python tools/analysis_tools/benchmark.py --list
    python tools/analysis_tools/benchmark.py --cases 'infer-b1-800x1344/*'

One run prints one table: this package's CvT-13 and CvT-21, transformers' ``CvtModel``
with the same weights, and mmdet's Swin-T, side by side on the same inputs; inference at
batch 8 x 224x224 and batch 1 x 800x1344, a training step at 800x1344 with and without
activation checkpointing, and CvT-13 with key/value stride 4 in the first stage. Each case
runs in a fresh subprocess (memory figures are its own) and states its achieved FLOP rate as
a fraction of a matmul rate measured in the same process, which is robust to a busy machine.
CPU by default (2 threads); CUDA when available, with fp16 and bf16 autocast rows.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time

import torch

from benchmark_cases import default_cases, quick_cases, select
from benchmark_report import CONVENTIONS, bar_chart, markdown_table
from benchmark_runner import Settings, SubprocessRunner, device_name
from cvt_backbone import ConfigError
from cvt_backbone.errors import run_main


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--device', choices=('cpu', 'cuda'),
                        default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--threads', type=int, default=2, help='CPU threads (default 2)')
    parser.add_argument('--quick', action='store_true',
                        help='a smoke run on tiny inputs (seconds per case)')
    parser.add_argument('--cases', nargs='+', metavar='GLOB',
                        help='run only the cases whose names match (see --list)')
    parser.add_argument('--list', action='store_true', help='list the case names and exit')
    parser.add_argument('--gemm-size', type=int,
                        help='side of the matmul that measures the device rate '
                             '(default 2048, 512 with --quick)')
    parser.add_argument('--out', help='write benchmark.md, benchmark.png and results.json '
                                      'to this directory')
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.device == 'cuda' and not torch.cuda.is_available():
        raise ConfigError('--device cuda, but torch sees no CUDA device on this machine '
                          f'(torch {torch.__version__}); run on a GPU machine or drop --device')
    if args.threads < 1:
        raise ConfigError(f'--threads must be at least 1, got {args.threads}')
    try:
        cases = select(quick_cases() if args.quick else default_cases(args.device), args.cases)
    except ValueError as err:  # a --cases pattern matches nothing; its first line says which
        raise ConfigError(f'{str(err).splitlines()[0].rstrip(":")} the cases (see --list)') \
            from None
    if args.list:
        print('\n'.join(case.name for case in cases))
        return
    settings = Settings(args.device, args.threads,
                        args.gemm_size or (512 if args.quick else 2048))
    command = ' '.join(shlex.quote(a) for a in [sys.executable.rsplit('/', 1)[-1]] + sys.argv)
    header = (f'Command: `{command}`\n\nDevice: {device_name(args.device)}, '
              f'{args.threads} threads' if args.device == 'cpu' else
              f'Command: `{command}`\n\nDevice: {device_name(args.device)}')
    header += f'; torch {torch.__version__}; {time.strftime("%Y-%m-%d %H:%M")}'
    print(header.replace('`', ''), flush=True)
    runner = SubprocessRunner(settings, log=lambda line: print(line, flush=True))
    start = time.perf_counter()
    results = [runner.run(case, f'[{i}/{len(cases)}]') for i, case in enumerate(cases, 1)]
    table = markdown_table(results)
    print(f'\n{table}\n\n{CONVENTIONS}\n\nTotal: {time.perf_counter() - start:.0f} s')
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, 'benchmark.md'), 'w') as f:
            f.write(f'{header}\n\n{table}\n\n{CONVENTIONS}\n')
        with open(os.path.join(args.out, 'results.json'), 'w') as f:
            json.dump(results, f, indent=1)
        bar_chart(results, os.path.join(args.out, 'benchmark.png'))
        print(f'Wrote benchmark.md, benchmark.png and results.json to {args.out}')


if __name__ == '__main__':
    run_main(main)
