"""ONNX export (tools/deployment/pytorch2onnx.py): dynamic sizes, the fast path, the check.

The exported graphs run in onnxruntime at three sizes, one non-square and one odd, and must
match PyTorch to 1e-4 of the output scale. The graph is the fast inference path: no
BatchNorm node, one Attention node per block with the CvT scale, and nothing computed from
the weights alone at run time.
"""
from __future__ import annotations

import copy
import importlib.util
import logging
import re
import subprocess
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from cvt_backbone import CvT
from cvt_backbone.apis import build_model, load_checkpoint
from cvt_backbone.checkpoint.write import atomic_save
from onnx_export import (
    DEPLOY_PACKAGES,
    TOLERANCE,
    ExportError,
    ExportTarget,
    build_target,
    compare,
    export_onnx,
    ort_session,
    quiet_exporters,
    second_shape,
)
from tests.helpers import ENV, ROOT, TINY, randomize_norms, relative_error

#: Exporting and running need the [deploy] extra; the refusals without it do not.
needs_deploy = pytest.mark.skipif(
    any(importlib.util.find_spec(name) is None for name in DEPLOY_PACKAGES),
    reason='the [deploy] extra (onnx, onnxruntime, onnxscript) is not installed')

#: The [openvino] extra: the tool's --openvino writes and checks an OpenVINO model.
HAS_OPENVINO = importlib.util.find_spec('openvino') is not None

CLS_CONFIG = ROOT / 'configs' / 'demo' / 'cvt-tiny_shapes-cls.py'
DET_CONFIG = ROOT / 'configs' / 'demo' / 'mask-rcnn_cvt-tiny_fpn_shapes.py'
#: (B, 3, H, W): the export size, a non-square one, an odd one.
SIZES = [(2, 3, 64, 64), (1, 3, 75, 101), (3, 3, 33, 33)]


def assert_onnx_matches(path: Path, module: torch.nn.Module, sizes=SIZES) -> None:
    session = ort_session(str(path))
    for shape in sizes:
        x = torch.randn(*shape)
        with torch.no_grad():
            references = module(x)
        outputs = session.run(None, {'input': x.numpy()})
        assert len(outputs) == len(references)
        for out, ref in zip(outputs, references):
            assert out.shape == tuple(ref.shape), shape
            assert relative_error(torch.from_numpy(out), ref) < TOLERANCE, shape


def weight_only_nodes(graph) -> list[str]:
    """Nodes (other than constants) whose every input is a weight or a constant."""
    known = {i.name for i in graph.initializer}
    found = []
    for node in graph.node:
        if node.input and all(i in known or not i for i in node.input):
            known.update(node.output)
            if node.op_type != 'Constant':
                found.append(f'{node.op_type} {node.name}')
        elif node.op_type == 'Constant':
            known.update(node.output)
    return found


@pytest.fixture(scope='module')
def tiny_export(tmp_path_factory) -> tuple[CvT, Path]:
    """A random tiny CvT (BatchNorm statistics randomised, so folding matters), exported
    in its deploy form with dynamic batch, height and width."""
    torch.manual_seed(0)
    model = CvT(arch=TINY)
    model.init_weights()
    randomize_norms(model, 0)
    model.eval()
    path = tmp_path_factory.mktemp('onnx') / 'tiny.onnx'
    deployed = copy.deepcopy(model).switch_to_deploy()
    target = ExportTarget(deployed, ['stage0', 'stage1', 'stage2'], 'tiny', (64, 64),
                          model.min_input_size())
    export_onnx(target, str(path), (64, 64), dynamic=True)
    return model, path


@needs_deploy
def test_dynamic_export_matches_pytorch_at_other_sizes(tiny_export):
    model, path = tiny_export
    assert_onnx_matches(path, model)
    # and the layer-by-layer reference, not only the deploy form it was exported from
    assert_onnx_matches(path, copy.deepcopy(model).use_fast_kernels(False))


@needs_deploy
@pytest.mark.parametrize('fast', [True, False], ids=['fast_kernels', 'reference'])
def test_the_torchscript_exporter_keeps_every_size_symbolic(tmp_path, fast):
    """The TorchScript exporter (the one mmdeploy drives) freezes a size read from an
    intermediate tensor to the value it traced. CvT takes every size from its input, so the
    graph exported at one size and batch runs at the others, class tokens included."""
    torch.manual_seed(0)
    model = CvT(arch=dict(TINY, cls_token=[True, False, True]))
    model.init_weights()
    randomize_norms(model, 0)
    model.eval().use_fast_kernels(fast)
    path = tmp_path / 'torchscript.onnx'
    with torch.no_grad():
        torch.onnx.export(model, (torch.randn(*SIZES[0]), ), str(path), dynamo=False,
                          opset_version=17, input_names=['input'],
                          dynamic_axes={'input': {0: 'batch', 2: 'height', 3: 'width'}})
    assert_onnx_matches(path, model)


@needs_deploy
def test_dynamic_axes_are_batch_height_width(tiny_export):
    import onnx
    _, path = tiny_export
    graph = onnx.load(str(path)).graph
    dims = [d.dim_param or d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
    assert dims == ['batch', 3, 'height', 'width']
    assert [o.name for o in graph.output] == ['stage0', 'stage1', 'stage2']


@needs_deploy
def test_graph_is_the_fast_path_with_the_cvt_scale(tiny_export):
    import onnx
    _, path = tiny_export
    graph = onnx.load(str(path)).graph
    ops = [node.op_type for node in graph.node]
    assert 'BatchNormalization' not in ops
    assert 'Erf' not in ops and 'Gelu' not in ops
    assert ops.count('Sigmoid') == sum(TINY['depths'])  # one QuickGELU per MLP
    scales = [next(a.f for a in node.attribute if a.name == 'scale')
              for node in graph.node if node.op_type == 'Attention']
    expected = [dims ** -0.5 for dims, depth in zip(TINY['embed_dims'], TINY['depths'])
                for _ in range(depth)]
    assert scales == pytest.approx(expected, rel=1e-6)
    assert weight_only_nodes(graph) == []


@needs_deploy
def test_detector_config_exports_backbone_and_neck(tmp_path):
    target = build_target(str(DET_CONFIG))
    assert target.output_names == [f'feat{i}' for i in range(5)]  # FPN's five levels
    path = tmp_path / 'det.onnx'
    export_onnx(target, str(path), (64, 64), dynamic=True)
    model, _ = build_model(str(DET_CONFIG))
    model.backbone.switch_to_deploy()
    model.load_state_dict(target.module.model.state_dict())
    assert_onnx_matches(path, lambda x: tuple(model.neck(model.backbone(x))))


TOOL = str(ROOT / 'tools' / 'deployment' / 'pytorch2onnx.py')


def run_export_tool(*args, env: dict = ENV) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, TOOL, *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope='module')
def classifier_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """The tool on the demo classifier, with a checkpoint written here."""
    tmp = tmp_path_factory.mktemp('export_tool')
    model, _ = build_model(str(CLS_CONFIG))
    randomize_norms(model.backbone, 1)
    atomic_save({'state_dict': model.state_dict(), 'meta': {}}, tmp / 'cls.pth')
    return tmp, run_export_tool(CLS_CONFIG, tmp / 'cls.onnx', '--checkpoint', tmp / 'cls.pth',
                                '--dynamic', '--shape', '64', '64',
                                *(['--openvino'] if HAS_OPENVINO else []))


@pytest.fixture(scope='module')
def tool_runs(tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
    """The tool on bad input, and without the [deploy] extra."""
    tmp = tmp_path_factory.mktemp('export_errors')
    no_onnxruntime = tmp / 'no_ort' / 'onnxruntime'
    no_onnxruntime.mkdir(parents=True)
    (no_onnxruntime / '__init__.py').write_text("raise ImportError('no onnxruntime here')\n")
    without_ort = dict(ENV, PYTHONPATH=f'{tmp / "no_ort"}:{ENV["PYTHONPATH"]}')
    no_openvino = tmp / 'no_ov' / 'openvino'
    no_openvino.mkdir(parents=True)
    (no_openvino / '__init__.py').write_text("raise ImportError('no openvino here')\n")
    without_ov = dict(ENV, PYTHONPATH=f'{tmp / "no_ov"}:{ENV["PYTHONPATH"]}')
    cases = {
        'unknown_preset': (['cvt-99', tmp / 'x.onnx'], ENV),
        'missing_config': ([tmp / 'nope.py', tmp / 'x.onnx'], ENV),
        'bad_shape': (['cvt-13', tmp / 'x.onnx', '--shape', '2', '64'], ENV),
        'no_extra': (['cvt-13', tmp / 'x.onnx'], without_ort),
        'no_openvino': (['cvt-13', tmp / 'x.onnx', '--openvino'], without_ov),
    }

    def run(name: str) -> subprocess.CompletedProcess:
        args, env = cases[name]
        return run_export_tool(*args, env=env)

    with ThreadPoolExecutor(max_workers=3) as pool:
        return dict(zip(cases, pool.map(run, cases)))


@needs_deploy
@pytest.mark.slow
def test_tool_exports_and_checks_the_whole_classifier(classifier_run):
    tmp, result = classifier_run
    assert result.returncode == 0, result.stderr[-3000:]
    checks = [line for line in result.stdout.splitlines() if 'onnxruntime at' in line]
    assert len(checks) == 2 and all(line.endswith(' ok') for line in checks), result.stdout
    assert 'onnxruntime at 2x3x64x64' in checks[0]
    second = checks[1].split('onnxruntime at 1x3x')[1].split(':')[0]
    h, w = map(int, second.split('x'))
    assert h != w and h % 16 and w % 16
    model, _ = build_model(str(CLS_CONFIG))
    load_checkpoint(model, str(tmp / 'cls.pth'))
    assert_onnx_matches(tmp / 'cls.onnx', lambda x: (model(x, mode='tensor'),))


@needs_deploy
@pytest.mark.skipif(not HAS_OPENVINO, reason='the [openvino] extra is not installed')
@pytest.mark.slow
def test_tool_writes_and_checks_the_openvino_model(classifier_run):
    from openvino_export import compile_openvino, effective_precision

    tmp, result = classifier_run
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp / 'cls.xml').is_file() and (tmp / 'cls.bin').stat().st_size > 0
    f32 = [line for line in result.stdout.splitlines() if 'OpenVINO f32 at' in line]
    assert len(f32) == 2 and all(line.endswith(' ok') for line in f32), result.stdout
    bf16 = [line for line in result.stdout.splitlines() if 'OpenVINO bf16 at' in line]
    if effective_precision(compile_openvino(str(tmp / 'cls.xml'), 'bf16')) == 'bf16':
        assert len(bf16) == 2 and all(line.endswith(' ok') for line in bf16), result.stdout
    else:
        assert not bf16 and 'OpenVINO bf16: not checked' in result.stdout
    # the saved model keeps float32 weights and computes what PyTorch does
    model, _ = build_model(str(CLS_CONFIG))
    load_checkpoint(model, str(tmp / 'cls.pth'))
    compiled = compile_openvino(str(tmp / 'cls.xml'), 'f32')
    x = torch.randn(3, 3, 70, 90, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model(x, mode='tensor')
    got = torch.from_numpy(compiled(x.numpy())[0])
    assert relative_error(got, expected) < 1e-4


@pytest.mark.parametrize('case, message', [
    ('unknown_preset', "error: 'cvt-99' is neither a CvT preset (cvt-13, cvt-21, cvt-w24) nor "
                       "a config file"),
    ('missing_config', 'is neither a CvT preset (cvt-13, cvt-21, cvt-w24) nor a config file'),
    ('bad_shape', 'error: --shape 2 64 is too small: each side must be at least 3 pixels'),
    ('no_extra', 'is not installed: the ONNX tools need the [deploy] extra '
                 '(pip install -e .[deploy])'),
    ('no_openvino', 'error: openvino is not installed: OpenVINO models need the [openvino] '
                    'extra (pip install -e .[openvino])'),
])
@pytest.mark.slow
def test_bad_input_gets_one_error_line(tool_runs, case, message):
    result = tool_runs[case]
    assert result.returncode != 0
    assert 'Traceback' not in result.stderr, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith('error: ') and message in last, last
    if case == 'no_extra':  # the first [deploy] package that is missing is named
        assert re.match(r'error: (onnx|onnxruntime|onnxscript) is not installed', last), last


def test_check_fails_beyond_1e4_of_the_output_scale():
    reference = (torch.full((1, 4, 3, 3), 10.), torch.ones(1, 2))
    close = [reference[0].numpy() + 5e-4, reference[1].numpy()]        # 5e-5 of the scale 10
    far = [reference[0].numpy(), reference[1].numpy() + 2e-4]          # 2e-4 of the scale 1
    ok = compare(close, reference, ['a', 'b'], (1, 3, 8, 8))
    bad = compare(far, reference, ['a', 'b'], (1, 3, 8, 8))
    assert ok.passed and ok.relative == pytest.approx(5e-5, rel=1e-3)
    assert not bad.passed and bad.worst == 'b' and 'FAILED' in bad.describe()
    with pytest.raises(ExportError, match='ONNX shape'):
        compare([reference[0].numpy()[:, :2], reference[1].numpy()], reference, ['a', 'b'],
                (1, 3, 8, 8))


@pytest.mark.parametrize('shape', [(224, 224), (800, 1344), (64, 64), (48, 64), (3, 3)])
def test_second_check_size_is_non_square_and_not_a_multiple_of_16(shape):
    h, w = second_shape(shape, 3)
    assert h != w and h % 16 and w % 16 and min(h, w) >= 3


def test_the_exporters_warnings_are_one_counted_line_unless_verbose(capsys, caplog):
    tracer = torch.jit.TracerWarning
    with quiet_exporters():
        warnings.warn('traced', tracer, stacklevel=1)
        warnings.warn('traced again', tracer, stacklevel=1)
        warnings.warn('old', DeprecationWarning, stacklevel=1)
        logging.getLogger('torch.onnx').warning('an exporter line')
    assert capsys.readouterr().out == ('(3 warnings of the exporters hidden: '
                                       'DeprecationWarning, TracerWarning; --verbose shows them)\n')
    assert 'an exporter line' not in caplog.text
    with pytest.warns(tracer, match='traced'), quiet_exporters(verbose=True):
        warnings.warn('traced', tracer, stacklevel=1)
        logging.getLogger('torch.onnx').warning('an exporter line')
    assert capsys.readouterr().out == ''
    assert 'an exporter line' in caplog.text
    with quiet_exporters():
        pass
    assert capsys.readouterr().out == ''  # nothing hidden, nothing said
