"""Peak memory of one attention call at CvT-13's stage-1 size, fused or written out.

    python tools/analysis_tools/attention_memory.py sdpa       # F.scaled_dot_product_attention
    python tools/analysis_tools/attention_memory.py sdpa-grad  # the same, forward and backward
    python tools/analysis_tools/attention_memory.py explicit   # softmax(q @ k.T) @ v

A 1344x800 input gives stage 1 of CvT-13 67,200 queries and (key/value stride 2) 16,800
keys of 64 dims in one head. Run each mode in its own process: the peak RSS of a process
only grows, so each figure is that of one call (fp32, 2 threads, the CvT scale 64 ** -0.5).
Whether the score matrix (67,200 x 16,800 floats, 4.5 GB) is ever held shows as gigabytes
above the inputs; which kernel PyTorch picks differs between releases, so measure on the
torch in question (docs/get_started.md, "On torch 2.1").
"""
from __future__ import annotations

import argparse
import resource
import time

import torch
import torch.nn.functional as F

QUERIES, KEYS, DIMS = 67_200, 16_800, 64


def peak_rss_gb() -> float:
    """This process's peak resident memory so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('mode', choices=['sdpa', 'sdpa-grad', 'explicit'])
    parser.add_argument('--threads', type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 1, n, DIMS, generator=generator) for n in (QUERIES, KEYS, KEYS))
    scale = DIMS ** -0.5
    before = peak_rss_gb()
    start = time.perf_counter()
    if args.mode == 'sdpa-grad':
        for t in (q, k, v):
            t.requires_grad_()
        F.scaled_dot_product_attention(q, k, v, scale=scale).sum().backward()
    else:
        with torch.no_grad():
            if args.mode == 'sdpa':
                F.scaled_dot_product_attention(q, k, v, scale=scale)
            else:
                torch.softmax((q * scale) @ k.transpose(-2, -1), dim=-1) @ v
    took = time.perf_counter() - start
    peak = peak_rss_gb()
    print(f'torch {torch.__version__}, {args.mode}, {QUERIES} x {KEYS} x {DIMS}, '
          f'{args.threads} threads: {took:.1f} s, peak RSS {peak:.2f} GB, '
          f'{peak - before:.2f} GB above the inputs')


if __name__ == '__main__':
    main()
