"""The published classifiers by name through mmpretrain, against a local hub.

``import cvt_backbone`` registers ``configs/cvt/metafile.yml`` with mmpretrain's model hub and
the checkpoint scheme ``hf://`` with MMEngine: ``mmpretrain.list_models('*cvt*')``,
``get_model(NAME, pretrained=True)`` and ``ImageClassificationInferencer(NAME)`` then work by
name. Here the hub is a server on 127.0.0.1 serving, as ``microsoft/cvt-13``, a random CvT-13
with a random 1000-class head in the layout of transformers' ``CvtForImageClassification``
(``config.json`` and ``model.safetensors``); mmpretrain runs in a child process whose
huggingface_hub asks that server (``HF_ENDPOINT``) and caches in the test's folder
(``HF_HOME``).
"""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from cvt_backbone import CvT
from tests.helpers import ROOT, hub_env, hub_files, local_hub, randomize_norms

pytestmark = pytest.mark.slow  # a child process downloading and running CvT-13
pytest.importorskip('mmpretrain')
pytest.importorskip('huggingface_hub')
pytest.importorskip('transformers')

NAME = 'cvt-13_3rdparty_in1k'
CHILD = """
import json, sys
import torch
import cvt_backbone  # the model index and hf://
import mmpretrain
from mmpretrain.apis import ImageClassificationInferencer

inputs, out, image, answer = sys.argv[1:5]
model = mmpretrain.get_model(NAME, pretrained=True)
with torch.no_grad():
    logits = model(torch.load(inputs), mode='tensor')
inferencer = ImageClassificationInferencer(NAME)
state, inferred = model.state_dict(), inferencer.model.state_dict()
result = inferencer(image)[0]
torch.save({'logits': logits, 'state': state}, out)
with open(answer, 'w') as f:  # not stdout: mmpretrain draws its progress bar there
    json.dump({
        'names': mmpretrain.list_models('*cvt*'),
        'same_weights': state.keys() == inferred.keys()
                        and all(torch.equal(v, inferred[k]) for k, v in state.items()),
        'num_scores': len(result['pred_scores']), 'pred_class': result['pred_class'],
        'classes': list(inferencer.classes)}, f)
""".replace('NAME', repr(NAME))


@pytest.fixture(scope='module')
def served(tmp_path_factory) -> dict:
    """A random CvT-13 classifier served as microsoft/cvt-13, and what mmpretrain made of it
    by name."""
    tmp = tmp_path_factory.mktemp('model_index')
    torch.manual_seed(0)
    backbone = CvT(arch='cvt-13', out_type='cls_token')
    backbone.init_weights()
    randomize_norms(backbone, 0)
    backbone.eval()
    head = (torch.randn(1000, 384) * 0.05, torch.randn(1000) * 0.05)
    inputs = torch.randn(2, 3, 224, 224)
    torch.save(inputs, tmp / 'inputs.pth')
    Image.fromarray((np.random.default_rng(0).random((180, 240, 3)) * 255).astype('uint8')
                    ).save(tmp / 'image.png')
    with local_hub({'microsoft/cvt-13': hub_files(backbone, head)}) as endpoint:
        result = subprocess.run(
            [sys.executable, '-c', CHILD, str(tmp / 'inputs.pth'), str(tmp / 'out.pth'),
             str(tmp / 'image.png'), str(tmp / 'answer.json')], cwd=tmp,
            env=hub_env(endpoint, tmp),
            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    with torch.no_grad():
        expected = backbone(inputs)[-1] @ head[0].T + head[1]
    return dict(tmp=tmp, backbone=backbone, head=head, expected=expected,
                answer=json.loads((tmp / 'answer.json').read_text()),
                out=torch.load(tmp / 'out.pth', weights_only=True))


def test_the_index_lists_every_model_of_the_metafile(served):
    metafile = yaml.safe_load((ROOT / 'configs' / 'cvt' / 'metafile.yml').read_text())
    names = {model['Name'].lower() for model in metafile['Models']}
    assert NAME in names
    assert names <= set(served['answer']['names'])


def test_get_model_by_name_gives_the_served_weights_and_their_logits(served):
    state = served['out']['state']
    for key, value in served['backbone'].state_dict().items():
        assert torch.equal(state[f'backbone.{key}'], value), key
    assert torch.equal(state['head.fc.weight'], served['head'][0])
    torch.testing.assert_close(served['out']['logits'], served['expected'])


def test_the_inferencer_by_name_predicts_an_imagenet_class(served):
    answer = served['answer']
    assert answer['same_weights']
    assert answer['num_scores'] == len(answer['classes']) == 1000
    assert answer['pred_class'] in answer['classes']
    assert (served['tmp'] / 'hf' / 'hub' / 'models--microsoft--cvt-13').is_dir()
