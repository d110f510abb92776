"""The benchmark's table (markdown) and bar chart (PNG)."""
from __future__ import annotations

from benchmark_cases import MODELS, Case

KIND_LABELS = {'ours': 'this CvT', 'port': 'transformers CvtModel', 'swin': 'mmdet Swin-T',
               'onnxruntime': 'our ONNX, onnxruntime', 'openvino': 'our ONNX, OpenVINO'}

CONVENTIONS = (
    'Latency: median of the timed runs after warm-up. Memory: each case runs in a fresh '
    'process; "peak" is the whole process (imports and weights included), "+built" is the '
    'peak above the process right after the model and input were built. FLOPs: 2 x '
    'multiply-accumulates of the forward (attention matmuls included); a training step '
    'counts 3 x the forward. "GEMM": rate of a square torch matmul in the row\'s precision '
    '(fp32, or bf16 / fp16 for those rows, whatever ran them), median of 5, measured in the '
    'same process before and after the case, the higher of the two; "of GEMM": achieved '
    'FLOP rate over it. "x port": latency of transformers\' CvtModel (same weights, same '
    'input, its own process) over this row\'s '
    'latency; "x port, per GEMM": the same with each latency counted in its own process\'s '
    'matmul time, which cancels a load that differed between the two processes. bf16 rows: '
    'PyTorch under torch.autocast, OpenVINO with INFERENCE_PRECISION_HINT bf16; onnxruntime '
    'and OpenVINO run the ONNX file tools/deployment/pytorch2onnx.py --dynamic writes. '
    'torch.compile rows: the first call, compilation included, is given with the model.')


def speedups(results: list[dict]) -> dict[str, tuple[float, float]]:
    """Speed-up of each result over the transformers port in the same setting.

    Args:
        results: Worker results.

    Returns:
        ``name -> (port latency / latency, the same with each latency multiplied by its
        process's matmul rate)`` for results whose port was measured.
    """
    done = {r['name']: r for r in results if 'error' not in r}
    out = {}
    for name, result in done.items():
        case = Case(**result['case'])
        port = case.spec.port and done.get(case.same_setting(case.spec.port).name)
        if port:
            out[name] = (port['latency'] / result['latency'],
                         port['latency'] * port['gemm'] / (result['latency'] * result['gemm']))
    return out


def _format_latency(seconds: float) -> str:
    return f'{seconds * 1e3:.0f} ms' if seconds < 1 else f'{seconds:.2f} s'


def markdown_table(results: list[dict]) -> str:
    """One row per case, grouped by setting, in the order run."""
    memory = next((r['memory'] for r in results if 'memory' in r), 'peak RSS')
    header = ('| setting | model | latency | ' + memory + ' (GB) | +built (GB) | GFLOP '
              '| GFLOP/s | GEMM GFLOP/s | of GEMM | x port | x port, per GEMM |')
    lines = [header, '|' + ' --- |' * 11]
    ratios = speedups(results)
    for result in results:
        case = Case(**result['case'])
        label = MODELS[case.model].label
        if result.get('first_call') is not None:
            label += f' (first call {_format_latency(result["first_call"])})'
        if 'error' in result:
            lines.append(f'| {case.setting} | {label} | failed: {result["error"]} |'
                         + ' |' * 8)
            continue
        ratio = ratios.get(result['name'])
        ratio = ('| | |' if ratio is None else f'| {ratio[0]:.2f}x | {ratio[1]:.2f}x |')
        lines.append(
            f'| {case.setting} | {label} | {_format_latency(result["latency"])} '
            f'| {result["process_peak"] / 1e9:.2f} | {result["increase"] / 1e9:.2f} '
            f'| {result["flops"] / 1e9:.1f} | {result["achieved"]:.1f} '
            f'| {result["gemm"]:.1f} | {100 * result["fraction_of_gemm"]:.0f}% {ratio}')
    return '\n'.join(lines)


def bar_chart(results: list[dict], path: str) -> None:
    """Latency and fraction of the matmul rate per case, as horizontal bars, to ``path``."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    done = [r for r in results if 'error' not in r]
    names = [f'{Case(**r["case"]).setting} | {MODELS[r["case"]["model"]].label}'
             for r in done]
    kinds = [k for k in KIND_LABELS if any(MODELS[r['case']['model']].kind == k for r in done)]
    colours = {kind: f'C{i}' for i, kind in enumerate(kinds)}
    bar_colours = [colours[MODELS[r['case']['model']].kind] for r in done]
    rows = list(range(len(done)))[::-1]
    fig, (ax_time, ax_rate) = plt.subplots(
        1, 2, figsize=(14, 1.5 + 0.35 * len(done)), sharey=True)
    ax_time.barh(rows, [r['latency'] for r in done], color=bar_colours)
    ax_time.set_xscale('log')
    ax_time.set_xlabel('latency (s, log scale)')
    ax_time.set_yticks(rows, names, fontsize=8)
    ax_rate.barh(rows, [100 * r['fraction_of_gemm'] for r in done], color=bar_colours)
    ax_rate.set_xlabel('achieved FLOP rate, % of the fp32 matmul rate')
    for kind, colour in colours.items():
        ax_rate.bar(0, 0, color=colour, label=KIND_LABELS[kind])
    ax_rate.legend(loc='lower right', fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
