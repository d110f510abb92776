"""Hub repository ids wherever the tools take a checkpoint, against a local hub.

The hub is a server on 127.0.0.1 (:func:`tests.helpers.local_hub`) serving two small random
CvT classifiers in transformers' layout (``tiny/cls`` at ``main`` and at ``v1``). Each tool
runs in a child process whose huggingface_hub asks that server (``HF_ENDPOINT``) and caches in
the test's folder (``HF_HOME``). What a tool makes of a hub id is compared with what it makes
of a local file holding the same weights.
"""
from __future__ import annotations

import json
import pickle
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from cvt_backbone import CvT, read_checkpoint
from cvt_backbone.checkpoint.write import atomic_save
from tests.helpers import (
    PORTABLE,
    ROOT,
    hub_env,
    hub_files,
    local_hub,
    randomize_norms,
    run_tool,
    tiny_cls_config,
)

pytestmark = pytest.mark.slow  # tool subprocesses, end to end
pytest.importorskip('huggingface_hub')
pytest.importorskip('transformers')

#: The demo classifier's config with the smallest arch transformers' port can build.
MODEL = f"""
model = dict(backbone=dict(arch={PORTABLE!r}), head=dict(in_channels={PORTABLE['embed_dims'][-1]}))
"""
#: Build a config's model and initialise it (init_cfg); save its backbone's weights.
INIT = """
import sys, torch
from cvt_backbone.apis import build_model
model, _ = build_model(sys.argv[1])
model.init_weights()
torch.save(model.backbone.state_dict(), sys.argv[2])
"""


def classifier(seed: int) -> tuple[CvT, tuple[torch.Tensor, torch.Tensor]]:
    """A random class-token CvT of :data:`PORTABLE` with the demo config's strides, and a
    random 3-class linear head."""
    torch.manual_seed(seed)
    model = CvT(arch=PORTABLE, kv_strides=[1, 1, 1], out_type='cls_token')
    model.init_weights()
    randomize_norms(model, seed)
    return model, (torch.randn(3, PORTABLE['embed_dims'][-1]), torch.randn(3))


def whole_model(model: CvT, head: tuple[torch.Tensor, torch.Tensor]) -> dict:
    """The weights as an mmpretrain ``ImageClassifier`` of the config holds them."""
    state = {f'backbone.{k}': v for k, v in model.state_dict().items()}
    state.update({'head.fc.weight': head[0], 'head.fc.bias': head[1]})
    return state


@pytest.fixture(scope='module')
def hub_runs(tmp_path_factory, shapes_cls) -> dict:
    tmp = tmp_path_factory.mktemp('hub_ids')
    main, v1 = classifier(0), classifier(1)
    repos = {'tiny/cls': hub_files(*main), 'tiny/cls@v1': hub_files(*v1)}
    atomic_save({'state_dict': whole_model(*main), 'meta': {}}, tmp / 'main.pth')
    atomic_save({'state_dict': whole_model(*v1), 'meta': {}}, tmp / 'v1.pth')
    config = tiny_cls_config(tmp / 'cfg.py', shapes_cls, extra=MODEL)
    init_config = tmp / 'init.py'
    init_config.write_text(textwrap.dedent(f"""
        _base_ = {str(config)!r}
        model = dict(backbone=dict(init_cfg=dict(_delete_=True, type='Pretrained',
                                                 checkpoint='tiny/cls')))
    """))
    images = shapes_cls / 'val'
    cases = {  # name -> (command, asks the hub)
        'test_hub': (['test.py', config, 'tiny/cls', '--out', tmp / 'test_hub.pkl'], True),
        'test_file': (['test.py', config, tmp / 'main.pth', '--out', tmp / 'test_file.pkl'],
                      False),
        'infer_hub': (['infer.py', config, 'hf://tiny/cls@v1', images, '--out-dir',
                       tmp / 'infer_hub'], True),
        'infer_file': (['infer.py', config, tmp / 'v1.pth', images, '--out-dir',
                        tmp / 'infer_file'], False),
        # lr 0: the weights trained stay the ones loaded
        'load_from': (['train.py', config, '--work-dir', tmp / 'load_from', '--cfg-options',
                       'load_from=tiny/cls', 'optim_wrapper.optimizer.lr=0',
                       'train_cfg.max_epochs=1'], True),
        'resume': (['train.py', config, '--work-dir', tmp / 'resume', '--resume', 'tiny/cls'],
                   True),
        'convert': (['model_converters/cvt2mmpretrain.py', 'tiny/cls', tmp / 'converted.pth'],
                    True),
        'init_cfg': ([INIT, init_config, tmp / 'init_cfg.pth'], True),
    }

    def run(name: str, endpoint: str) -> subprocess.CompletedProcess:
        command, asks_hub = cases[name]
        env = hub_env(endpoint, tmp / name) if asks_hub else None
        if name == 'init_cfg':
            return subprocess.run([sys.executable, '-c', *map(str, command)], cwd=ROOT,
                                  env=env, capture_output=True, text=True, timeout=600)
        return run_tool(*command, env=env)

    with local_hub(repos) as endpoint, ThreadPoolExecutor(max_workers=3) as pool:
        results = dict(zip(cases, pool.map(lambda name: run(name, endpoint), cases)))
    return dict(tmp=tmp, results=results, main=main, v1=v1)


def ok(hub_runs: dict, name: str) -> subprocess.CompletedProcess:
    result = hub_runs['results'][name]
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result


def test_the_test_tool_evaluates_a_hub_id_as_the_file_of_its_weights(hub_runs):
    ok(hub_runs, 'test_hub')
    ok(hub_runs, 'test_file')
    # the tool's own output: our DumpResults, read back
    with open(hub_runs['tmp'] / 'test_hub.pkl', 'rb') as f:
        from_hub = pickle.load(f)
    with open(hub_runs['tmp'] / 'test_file.pkl', 'rb') as f:
        from_file = pickle.load(f)
    assert len(from_hub) == len(from_file) > 0
    for hub, file in zip(from_hub, from_file):
        assert torch.equal(hub['pred_score'], file['pred_score'])
    assert (hub_runs['tmp'] / 'test_hub' / 'hf' / 'hub' / 'models--tiny--cls').is_dir()


def test_the_infer_tool_reads_a_revision_after_hf(hub_runs):
    ok(hub_runs, 'infer_hub')
    ok(hub_runs, 'infer_file')
    hub, file = hub_runs['tmp'] / 'infer_hub' / 'preds', hub_runs['tmp'] / 'infer_file' / 'preds'
    names = sorted(p.relative_to(file) for p in file.rglob('*.json'))
    assert names and sorted(p.relative_to(hub) for p in hub.rglob('*.json')) == names
    for name in names:
        assert json.loads((hub / name).read_text()) == json.loads((file / name).read_text())


def test_load_from_takes_a_hub_id(hub_runs):
    ok(hub_runs, 'load_from')
    trained = read_checkpoint(str(hub_runs['tmp'] / 'load_from' / 'epoch_1.pth'))['state_dict']
    served = whole_model(*hub_runs['main'])
    params = [k for k in served if not k.endswith(('running_mean', 'running_var',
                                                   'num_batches_tracked'))]
    assert params and all(torch.equal(trained[k], served[k]) for k in params)


def test_resume_takes_a_hub_id_and_finds_no_training_state_there(hub_runs):
    result = hub_runs['results']['resume']
    assert result.returncode == 1 and 'Traceback' not in result.stderr, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1] == (
        "error: Cannot resume from checkpoint 'tiny/cls': it holds no training state (no "
        "'meta' with epoch and iter counters from 0 to 2**31); use load_from for a weights-only "
        "checkpoint")


def test_the_converter_takes_a_hub_id(hub_runs):
    ok(hub_runs, 'convert')
    converted = read_checkpoint(str(hub_runs['tmp'] / 'converted.pth'))['state_dict']
    served = whole_model(*hub_runs['main'])
    assert converted.keys() == served.keys()
    assert all(torch.equal(converted[k], served[k]) for k in served)


def test_init_cfg_takes_a_hub_id(hub_runs):
    ok(hub_runs, 'init_cfg')
    loaded = torch.load(hub_runs['tmp'] / 'init_cfg.pth', weights_only=True)
    served = hub_runs['main'][0].state_dict()
    assert loaded.keys() == served.keys()
    assert [k for k in served if not torch.equal(loaded[k], served[k])] == []
