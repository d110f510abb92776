"""tools/train.py and tools/test.py refuse bad checkpoints and configs with one clear line.

Each case runs the real command in a subprocess (a few at a time) against the demo
classification config on a tiny generated dataset. A refused command exits with status 1,
prints ``error: ...`` naming the file or field and the problem as its last line, shows no
traceback, and never runs code from a checkpoint.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from mmengine.config import Config

from demo_shapes import make_classification_set
from tests.helpers import ENV, ROOT, make_official

pytestmark = pytest.mark.slow  # tool subprocesses, end to end

CONFIG = str(ROOT / 'configs' / 'demo' / 'cvt-tiny_shapes-cls.py')
SEG_CONFIG = ROOT / 'configs' / 'demo' / 'upernet_cvt-tiny_shapes.py'
IMAGENET_CONFIG = ROOT / 'configs' / 'cvt' / 'cvt-13_8xb256_in1k-224px.py'


class _Payload:
    """Pickles as a call of ``os.system`` that creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f'touch {self.marker}',))


def _whole_model_state() -> dict[str, torch.Tensor]:
    """The state dict of the demo config's classifier, freshly initialised."""
    from mmpretrain.registry import MODELS
    return MODELS.build(Config.fromfile(CONFIG).model).state_dict()


@pytest.fixture(scope='module')
def runs(tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
    """Run every case once (three at a time): name -> result."""
    tmp = tmp_path_factory.mktemp('tools')
    data = tmp / 'shapes_cls'
    make_classification_set(str(data), num_train=4, num_val=4, size=32)
    roots = [f'train_dataloader.dataset.dataset.data_root={data}',  # in SeededDataset
             f'val_dataloader.dataset.data_root={data}',
             f'test_dataloader.dataset.data_root={data}']
    marker = tmp / 'pwned'
    torch.save({'state_dict': {'x': torch.zeros(1)}, 'extra': _Payload(marker)}, tmp / 'evil.pth')
    torch.load(tmp / 'evil.pth', weights_only=False)  # our own payload: it does run
    assert marker.exists()
    marker.unlink()
    state = _whole_model_state()
    torch.save({'state_dict': state, 'meta': {}}, tmp / 'good.pth')
    cut = (tmp / 'good.pth').read_bytes()
    (tmp / 'truncated.pth').write_bytes(cut[:len(cut) // 2])
    torch.save({'conv1.weight': torch.zeros(8, 3, 7, 7), 'fc.weight': torch.zeros(2, 8)},
               tmp / 'resnet.pth')
    torch.save([1, 2, 3], tmp / 'list.pth')
    _, official, _ = make_official(tmp)
    official['stage0.patch_embed.proj.weight'] = torch.tensor(1.)
    torch.save(official, tmp / 'zero_dim.pth')
    (tmp / 'mmfoo.py').write_text("_base_ = 'mmfoo::models/x.py'\n")
    (tmp / 'imagenet' / 'data' / 'imagenet' / 'val').mkdir(parents=True)  # no train/

    train, test = str(ROOT / 'tools' / 'train.py'), str(ROOT / 'tools' / 'test.py')
    without_mmseg = ("import runpy, sys; sys.modules['mmseg'] = None; "
                     "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')")
    cases = {
        'test_evil': [test, CONFIG, str(tmp / 'evil.pth'), '--cfg-options', *roots],
        'resume_evil': [train, CONFIG, '--resume', str(tmp / 'evil.pth'), '--cfg-options',
                        *roots],
        'load_from_evil': [train, CONFIG, '--cfg-options', f'load_from={tmp / "evil.pth"}',
                           *roots],
        'test_truncated': [test, CONFIG, str(tmp / 'truncated.pth'), '--cfg-options', *roots],
        'test_foreign': [test, CONFIG, str(tmp / 'resnet.pth'), '--cfg-options', *roots],
        'test_good': [test, CONFIG, str(tmp / 'good.pth'), '--cfg-options', *roots],
        'resume_weights_only': [train, CONFIG, '--resume', str(tmp / 'good.pth'),
                                '--cfg-options', *roots],
        'typo_loop': [train, CONFIG, '--cfg-options', 'train_cfg.max_epoch=1', *roots],
        'typo_typed': [train, CONFIG, '--cfg-options', 'optim_wrapper.optimizer.lrr=1',
                       *roots],
        'typo_untyped': [train, CONFIG, '--cfg-options', 'default_hooks.chekpoint.interval=1',
                         *roots],
        'test_typo': [test, CONFIG, str(tmp / 'good.pth'), '--cfg-options',
                      'test_dataloader.batch_sise=2', *roots],
        'no_toolbox': [train, str(tmp / 'mmfoo.py')],
        'hidden_mmseg': ['-c', without_mmseg, train, str(SEG_CONFIG)],
        'launcher': [train, CONFIG, '--launcher', 'pytorch', '--cfg-options', *roots],
        'imagenet': [train, str(IMAGENET_CONFIG)],
        'list_resume': [train, CONFIG, '--resume', str(tmp / 'list.pth'), '--cfg-options',
                        'randomness.seed=None', *roots],
        'bad_url': [test, CONFIG, 'http://[::1/x.pth', '--cfg-options', *roots],
        'zero_dim': [test, CONFIG, str(tmp / 'zero_dim.pth'), '--cfg-options', *roots],
    }

    def run(name: str) -> subprocess.CompletedProcess:
        folder = tmp / name
        folder.mkdir(exist_ok=True)
        return subprocess.run([sys.executable, *cases[name], '--work-dir', str(folder)],
                              cwd=folder, env=ENV, capture_output=True, text=True,
                              timeout=600)

    with ThreadPoolExecutor(max_workers=3) as pool:
        results = dict(zip(cases, pool.map(run, cases)))
    assert not marker.exists(), 'a checkpoint ran code'
    return results


def assert_refused(result: subprocess.CompletedProcess, pattern: str) -> None:
    assert result.returncode == 1, result.stderr[-3000:]
    assert 'Traceback' not in result.stderr, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert re.fullmatch(pattern, last), last


@pytest.mark.parametrize('case', ['test_evil', 'resume_evil', 'load_from_evil'])
def test_checkpoint_with_code_is_refused_by_every_tool_path(runs, case):
    result = runs[case]
    assert_refused(result, r"error: Refused to load checkpoint '.*/evil\.pth': its pickle needs "
                           r'posix\.system, which is not on the list of plain weights .*')


@pytest.mark.parametrize('case, pattern', [
    ('test_truncated', r"error: Could not read checkpoint '.*/truncated\.pth': the file is "
                       r'truncated or corrupt \(.+\)'),
    ('test_foreign', r"error: checkpoint '.*/resnet\.pth' does not fit the model of this "
                     r'config: missing keys backbone\.stages\.0\..*'),
    ('resume_weights_only', r"error: Cannot resume from checkpoint '.*/good\.pth': it holds no "
                            r"training state \(no 'meta' with epoch and iter counters from 0 "
                            r"to 2\*\*31\); use load_from for a weights-only checkpoint"),
])
def test_bad_input_gets_one_line_naming_it(runs, case, pattern):
    result = runs[case]
    assert_refused(result, pattern)


@pytest.mark.parametrize('case, pattern', [
    # a part MMEngine builds (a loop, an optimizer, a dataloader): its own refusal when it
    # builds the part, with the option named
    ('typo_loop', r"error: --cfg-options train_cfg\.max_epoch: EpochBasedTrainLoop\.__init__\(\) "
                  r"got an unexpected keyword argument 'max_epoch'"),
    ('typo_typed', r"error: --cfg-options optim_wrapper\.optimizer\.lrr: AdamW\.__init__\(\) "
                   r"got an unexpected keyword argument 'lrr'"),
    ('test_typo', r"error: --cfg-options test_dataloader\.batch_sise: DataLoader\.__init__\(\) "
                  r"got an unexpected keyword argument 'batch_sise'"),
    # a part of the config alone: refused before anything is built, with what is there
    ('typo_untyped', r"error: --cfg-options default_hooks\.chekpoint\.interval: default_hooks "
                     r"has no 'chekpoint' \(it has: \[.*'checkpoint'.*\]\)"),
])
def test_a_mistyped_option_is_named(runs, case, pattern):
    assert_refused(runs[case], pattern)


@pytest.mark.parametrize('case, pattern', [
    ('no_toolbox', r"error: .*/mmfoo\.py inherits from mmfoo, which is not installed: mmfoo "
                   r'\(pip install cvt-backbone\[all\]\)'),
    ('hidden_mmseg', r'error: mmsegmentation is not installed: install '
                     r'mmsegmentation>=1\.2\.2,<1\.3 \(pip install cvt-backbone\[seg\]\)'),
])
def test_a_toolbox_that_is_not_installed_is_named_with_its_extra(runs, case, pattern):
    assert_refused(runs[case], pattern)


def test_the_pytorch_launcher_outside_torchrun_says_what_to_start(runs):
    assert_refused(runs['launcher'], r'error: --launcher pytorch needs the environment torchrun '
                                     r'\(tools/dist_train\.sh, tools/dist_test\.sh\) sets \(RANK, '
                                     r'WORLD_SIZE, MASTER_ADDR, MASTER_PORT missing\): .*')


def test_imagenet_without_its_training_folder_points_at_the_docs(runs):
    assert_refused(runs['imagenet'], r"error: train_dataloader\.dataset\.dataset\.split: "
                                     r"'data/imagenet/train' does not exist\. Data layouts for "
                                     r'COCO, ADE20K and ImageNet: docs/training\.md, "Data"\.')


@pytest.mark.parametrize('case, pattern', [
    # read by --resume for its seed (randomness.seed=None), then by the Runner
    ('list_resume', r"error: Cannot resume from checkpoint '.*/list\.pth': it holds no training "
                    r'state .*'),
    ('bad_url', r"error: Could not download checkpoint 'http://\[::1/x\.pth': malformed URL "
                r'\(Invalid IPv6 URL\)'),
    ('zero_dim', r"error: checkpoint '.*/zero_dim\.pth': stages\.0\.patch_embed\.projection\."
                 r'weight of the weights has shape \(\), not that of a square convolution '
                 r'\(out, in, k, k\)'),
])
def test_a_malformed_checkpoint_is_one_line(runs, case, pattern):
    assert_refused(runs[case], pattern)


def test_a_complete_checkpoint_is_evaluated(runs):
    result = runs['test_good']
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'accuracy/top1' in result.stdout + result.stderr


@pytest.mark.parametrize('args, message', [
    (('analysis_tools/get_flops.py', 'cvt-99'), "error: 'cvt-99' is neither a CvT preset "
                                                '(cvt-13, cvt-21, cvt-w24) nor a config file'),
    (('analysis_tools/get_flops.py', 'cvt-13', '--shape', '2', '2'),
     'error: --shape 2 2 is too small for CvT: each side must be at least 3 pixels'),
    (('analysis_tools/get_flops.py', 'cvt-13', '--batch', '0'),
     'error: --batch must be at least 1, got 0'),
    (('analysis_tools/benchmark.py', '--threads', '0'),
     'error: --threads must be at least 1, got 0'),
    (('analysis_tools/benchmark.py', '--cases', 'NOMATCH', '--list'),
     "error: --cases 'NOMATCH' matches none of the cases (see --list)"),
])
def test_analysis_tools_refuse_bad_arguments_in_one_line(args, message):
    from tests.helpers import run_tool
    result = run_tool(*args, timeout=300)
    assert result.returncode == 1 and 'Traceback' not in result.stderr, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1] == message


@pytest.mark.skipif(torch.cuda.is_available(), reason='needs a machine without CUDA')
def test_benchmark_on_cuda_without_a_gpu_says_so():
    from tests.helpers import run_tool
    result = run_tool('analysis_tools/benchmark.py', '--device', 'cuda', '--quick', timeout=300)
    assert result.returncode == 1 and 'Traceback' not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(
        'error: --device cuda, but torch sees no CUDA device on this machine')
