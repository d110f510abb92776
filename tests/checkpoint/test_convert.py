"""A stated arch (a transformers ``config.json``) is checked against the tensors actually
present before anything of that arch is built; so are the depths the keys claim."""
from __future__ import annotations

import json

import pytest
import torch

from cvt_backbone import CheckpointError, CvT, load_cvt_weights, read_checkpoint
from cvt_backbone.checkpoint import canonical_checkpoint
from cvt_backbone.checkpoint.convert import (
    arch_from_state_dict,
    arch_from_transformers_config,
    unwrap_state_dict,
)
from tests.helpers import TINY, call_tool, load_script, make_official

cvt2mmpretrain = load_script('model_converters/cvt2mmpretrain.py')

CVT_13 = dict(embed_dim=[64, 192, 384], depth=[1, 2, 10], num_heads=[1, 3, 6])


def transformers_folder(tmp_path, config: object, raw: str | None = None):
    """A ``save_pretrained``-like folder: TINY official weights and the given config.json."""
    _, state, _ = make_official(tmp_path)
    folder = tmp_path / 'folder'
    folder.mkdir()
    torch.save(state, folder / 'pytorch_model.bin')
    (folder / 'config.json').write_text(raw if raw is not None else json.dumps(config))
    return folder


def convert(folder, tmp_path, capsys) -> str:
    """Run the converter on ``folder``; it must fail, write nothing, and say one line."""
    assert call_tool(cvt2mmpretrain.main, [str(folder), str(tmp_path / 'out.pth')]) == 1
    assert not (tmp_path / 'out.pth').exists()
    errors = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith('error: '), errors
    return errors[0]


def test_a_config_json_of_another_size_is_refused_before_building(tmp_path, capsys):
    folder = transformers_folder(tmp_path, dict(CVT_13, model_type='cvt'))
    checkpoint = read_checkpoint(folder)  # reading builds nothing and checks nothing yet
    with pytest.raises(CheckpointError, match=r'states another arch than its weights have: '
                                              r'embed_dims \[64, 192, 384\] stated vs '
                                              r'\[16, 32, 48\] in the weights'):
        canonical_checkpoint(checkpoint, 'folder')
    with pytest.raises(CheckpointError, match='embed_dims'):
        load_cvt_weights(CvT(arch=TINY), folder)
    assert 'embed_dims' in convert(folder, tmp_path, capsys)


@pytest.mark.parametrize('config, words', [
    (dict(CVT_13, embed_dim=[100000, 192, 384]), r'embed_dim must be integers from 1 to'),
    (dict(CVT_13, depth=[1, 2, 1 << 40]), r'depth must be integers from 1 to'),
    (dict(CVT_13, depth=[1, 2]), 'per-stage fields have different lengths'),
    (dict(CVT_13, num_heads=[1, 3, 7]), 'embed_dim 384, which num_heads 7 does not divide'),
    (dict(CVT_13, embed_dim=[[[64]], 192, 384]), 'embed_dim must be integers'),
    (dict(CVT_13, cls_token=[0, 0, 'yes']), 'cls_token must be true or false'),
    (dict(CVT_13, depth=5), 'depth must list one value per stage, got int'),
])
def test_absurd_stated_values_are_named(tmp_path, capsys, config, words):
    with pytest.raises(CheckpointError, match=words):
        arch_from_transformers_config(config)
    folder = transformers_folder(tmp_path, dict(config, model_type='cvt'))
    assert words.split(' ')[0] in convert(folder, tmp_path, capsys)


@pytest.mark.parametrize('raw, words', [
    ('[' * 100000 + ']' * 100000, 'nests its values too deeply'),
    ('["cvt"]', 'holds a JSON list, not the object of a config.json'),
    ('{"model_type": "bert"}', "type 'bert', not a CvT"),
    ('{"model_type": ', 'is not valid JSON'),
])
def test_a_malformed_config_json_is_one_error(tmp_path, capsys, raw, words):
    folder = transformers_folder(tmp_path, None, raw=raw)
    with pytest.raises(CheckpointError, match=words):
        read_checkpoint(folder)
    assert words.split(' ')[0] in convert(folder, tmp_path, capsys)


def test_depths_count_only_blocks_that_are_there_in_full():
    state = CvT(arch=TINY).state_dict()
    assert arch_from_state_dict(state)['depths'] == [1, 1, 2]
    far = dict(state)
    far['stages.2.blocks.999.norm1.weight'] = torch.ones(48)
    with pytest.raises(CheckpointError, match=r'Stage 2 of the weights has blocks 0, 1, '
                                              r'999, not 0 to 2'):
        arch_from_state_dict(far)
    beyond = {**state, 'stages.2.blocks.' + '9' * 4301 + '.norm1.weight': torch.ones(48)}
    assert arch_from_state_dict(beyond)['depths'] == [1, 1, 2]  # no CvT block: a stray key
    thin = dict(state)
    thin['stages.2.blocks.1.mlp.fc1.weight'] = torch.ones(1, 1)
    with pytest.raises(CheckpointError, match=r'Block stages.2.blocks.1 of the weights is not '
                                              r'one of its stage \(width 48\): .*fc1.weight '
                                              r'\(1, 1\)'):
        arch_from_state_dict(thin)


@pytest.mark.parametrize('state', [{0: torch.zeros(1)}, {'a': torch.zeros(1), 1: torch.zeros(1)}])
def test_a_state_dict_with_keys_that_are_not_str_is_named(state):
    with pytest.raises(CheckpointError, match='state dict of tensors under str keys'):
        unwrap_state_dict({'state_dict': state}, 'ckpt.pth')
