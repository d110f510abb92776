"""The benchmark: the transformers port's weights, cases, measurements and the report."""
import dataclasses
import subprocess
import sys

import pytest
import torch

from benchmark_cases import MODELS, Case, default_cases, quick_cases, select
from benchmark_report import bar_chart, markdown_table, speedups
from benchmark_runner import Settings, SubprocessRunner, measure
from cvt_backbone import CvT
from tests.helpers import ENV, PORTABLE, ROOT, port_of, randomize_norms


@pytest.mark.parametrize('kwargs', [dict(), dict(kv_strides=[4, 2, 2])])
def test_transformers_port_gets_our_weights(kwargs):
    pytest.importorskip('transformers')
    torch.manual_seed(0)
    ours = CvT(arch=PORTABLE, **kwargs)
    ours.init_weights()
    randomize_norms(ours)
    port = port_of(ours.eval())
    x = torch.randn(2, 3, 80, 112, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = port(x, output_hidden_states=True).hidden_states
        maps = []
        hooks = [s.register_forward_hook(
            lambda _m, _i, out: maps.append(out[0].transpose(1, 2).reshape(
                2, -1, *out[1]))) for s in ours.stages]
        ours(x)
    for hook in hooks:
        hook.remove()
    for a, b in zip(maps, ref):
        assert ((a - b).abs().max() / b.abs().max()).item() < 1e-5


def test_default_cases_cover_the_issue():
    names = [c.name for c in default_cases('cpu')]
    assert len(names) == len(set(names))
    for name in ('infer-b8-224x224/cvt-13', 'infer-b8-224x224/port-cvt-13',
                 'infer-b1-800x1344/cvt-21', 'infer-b1-800x1344/port-cvt-13',
                 'infer-b1-800x1344/swin-t', 'infer-b1-800x1344/cvt-13-kv4',
                 'train-b1-800x1344/cvt-13', 'train-b1-800x1344-with_cp/cvt-13',
                 # PyTorch against the runtimes, fp32 and bf16, both sizes; training in both
                 'infer-b1-800x1344/cvt-13-compiled', 'infer-b1-800x1344/ort-cvt-13',
                 'infer-b1-800x1344/ov-cvt-13', 'infer-b1-800x1344-bf16/cvt-13',
                 'infer-b1-800x1344-bf16/cvt-13-compiled', 'infer-b1-800x1344-bf16/ov-cvt-13',
                 'infer-b8-224x224-bf16/cvt-13', 'infer-b8-224x224-bf16/ov-cvt-13',
                 'infer-b8-224x224/ov-cvt-13', 'train-b8-224x224/cvt-13',
                 'train-b8-224x224-bf16/cvt-13'):
        assert name in names
    assert not any('fp16' in n for n in names)
    assert any('fp16' in c.name for c in default_cases('cuda'))
    port = next(c for c in default_cases('cpu') if c.name == 'infer-b1-800x1344/port-cvt-13')
    assert port.warmup + port.repeats <= 3


def test_select_cases_by_glob():
    cases = quick_cases()
    assert [c.model for c in select(cases, ['infer*/cvt-13'])] == ['cvt-13']
    assert len(select(cases, ['train*'])) == 2
    with pytest.raises(ValueError, match='matches none'):
        select(cases, ['nothing*'])


def test_measure_in_process():
    case = Case('cvt-13', 'train', 1, 48, 64, warmup=1, repeats=2)
    result = measure(case, Settings('cpu', threads=1, gemm_size=128), report=lambda _: None)
    assert result['name'] == 'train-b1-48x64/cvt-13' and len(result['times']) == 2
    assert result['latency'] > 0 and result['gemm'] > 0
    assert result['flops'] == 3 * 2 * result['macs'] > 0
    assert result['process_peak'] >= result['increase'] >= 0


@pytest.mark.slow  # exports CvT-13 and compiles it: half a minute to a minute each
@pytest.mark.parametrize('model, precision', [('ort-cvt-13', 'fp32'), ('ov-cvt-13', 'fp32'),
                                              ('ov-cvt-13', 'bf16')])
def test_measure_a_runtime_running_our_export(model, precision):
    pytest.importorskip('onnxscript')
    pytest.importorskip('openvino' if model.startswith('ov') else 'onnxruntime')
    case = Case(model, 'infer', 1, 48, 64, precision=precision, warmup=1, repeats=1)
    settings = Settings('cpu', threads=1, gemm_size=128)
    if precision == 'bf16':
        from onnx_export import build_target, export_onnx
        from openvino_export import compile_openvino, effective_precision
        # the row needs a CPU on which OpenVINO runs bf16; elsewhere it says so
        path = f'{pytest.importorskip("tempfile").mkdtemp()}/m.onnx'
        export_onnx(build_target('cvt-13'), path, (64, 64), dynamic=True)
        if effective_precision(compile_openvino(path, 'bf16')) != 'bf16':
            with pytest.raises(ValueError, match='not bf16'):
                measure(case, settings, report=lambda _: None)
            return
    result = measure(case, settings, report=lambda _: None)
    assert result['name'] == f'infer-b1-48x64{"-bf16" * (precision == "bf16")}/{model}'
    assert result['latency'] > 0 and result['macs'] > 0 and result['first_call'] is None


def fake_result(model: str, latency: float, task: str = 'infer') -> dict:
    case = Case(model, task, 1, 64, 96)
    return dict(name=case.name, case=case.to_dict(), latency=latency, memory='peak RSS',
                process_peak=1.2e9, increase=0.3e9, flops=2e9, achieved=2 / latency,
                gemm=10., fraction_of_gemm=0.2 / latency, times=[latency], macs=1e9)


def test_report_table_and_chart(tmp_path):
    results = [fake_result('cvt-13', 0.5), fake_result('port-cvt-13', 2.0),
               fake_result('swin-t', 0.4),
               dict(name='x', case=Case('cvt-21', 'infer', 1, 64, 96).to_dict(),
                    error='exit status -9')]
    results[1]['gemm'] = 5.  # the port's process saw half the matmul rate
    assert speedups(results) == {'infer-b1-64x96/cvt-13': (4.0, 2.0),
                                 'infer-b1-64x96/port-cvt-13': (1.0, 1.0)}
    table = markdown_table(results)
    assert '| infer b1 64x96 | CvT-13 | 500 ms | 1.20 | 0.30 | 2.0 |' in table
    assert '| 4.00x | 2.00x |' in table and 'failed: exit status -9' in table
    assert table.count('\n') == len(results) + 1
    assert len({line.count('|') for line in table.splitlines()}) == 1  # same columns
    bar_chart(results, str(tmp_path / 'chart.png'))
    assert (tmp_path / 'chart.png').stat().st_size > 1000


def test_every_model_has_a_port_or_none():
    for key, spec in MODELS.items():
        assert spec.port is None or MODELS[spec.port].kind == 'port', key


@pytest.mark.slow
def test_benchmark_tool_quick_run(tmp_path):
    out = subprocess.run(
        [sys.executable, 'tools/analysis_tools/benchmark.py', '--quick', '--cases',
         'infer*/cvt-13', '--out', str(tmp_path)],
        cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert '[1/1] infer-b2-64x96/cvt-13: run 1/1' in out.stdout
    table = (tmp_path / 'benchmark.md').read_text()
    assert '| infer b2 64x96 | CvT-13 |' in table and 'Command:' in table
    assert (tmp_path / 'benchmark.png').exists() and (tmp_path / 'results.json').exists()


def test_mmap_threshold_rows_set_glibc_env_of_their_process_only(monkeypatch):
    monkeypatch.setenv('MALLOC_MMAP_THRESHOLD_', '999')
    runner = SubprocessRunner(Settings('cpu', threads=2, gemm_size=128), log=lambda _: None)
    plain = Case('cvt-13', 'train', 1, 800, 1344, with_cp=True)
    fixed = dataclasses.replace(plain, mmap_threshold=128 * 1024)
    assert 'MALLOC_MMAP_THRESHOLD_' not in runner._env(plain)
    assert runner._env(fixed)['MALLOC_MMAP_THRESHOLD_'] == '131072'
    assert runner._env(fixed)['OMP_NUM_THREADS'] == '2'
    assert fixed.name == 'train-b1-800x1344-with_cp-mmap_threshold=128K/cvt-13'
    cpu_names = [c.name for c in default_cases('cpu')]
    assert fixed.name in cpu_names and 'train-b1-800x1344-mmap_threshold=128K/cvt-13' in cpu_names
    assert not any('mmap' in c.name for c in default_cases('cuda'))
