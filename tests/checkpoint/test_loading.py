"""Loading weights: every CvT format on every loader, completely or not at all; a
checkpoint of another arch refused wherever it is loaded; whole models filled completely."""
import pytest
import torch
from mmengine.runner import load_checkpoint

from cvt_backbone import CheckpointError, CvT, convert_official_cvt
from cvt_backbone.checkpoint import (
    MMENGINE_WRAPPER,
    canonical_checkpoint,
    check_checkpoint_fits,
    detect_format,
    diff_on_meta,
    diff_state_dict,
)
from cvt_backbone.checkpoint.loading import check_dataset_meta, predicted_classes
from tests.helpers import TINY, make_official

pytestmark = pytest.mark.usefixtures('safe_loading')  # load_checkpoint as the configs have it


def test_official_keys_convert_to_ours(tmp_path):
    src, state, _ = make_official(tmp_path)
    assert detect_format(state) == 'official'
    converted = convert_official_cvt(state)
    assert 'stages.0.patch_embed.projection.weight' in converted
    assert 'stages.2.blocks.1.attn.conv_proj.v.bn.running_var' in converted
    assert 'cls_norm.weight' in converted and 'head.weight' in converted
    assert set(src.state_dict()) == set(converted) - {'head.weight', 'head.bias'}


def test_unknown_keys_of_a_format_are_named():
    with pytest.raises(CheckpointError, match=r'official format: unexpected keys stage0\.typo'):
        convert_official_cvt({'stage0.patch_embed.proj.weight': torch.zeros(1),
                              'stage0.typo': torch.zeros(1)})


@pytest.mark.parametrize('out_type', ['featmap', 'cls_token'])
def test_official_checkpoint_loads_through_every_loader(tmp_path, out_type):
    src, state, path = make_official(tmp_path)
    src.eval()
    x = torch.randn(1, 3, 64, 64)

    def same(model):
        for key, value in src.state_dict().items():
            if key in model.state_dict():
                assert torch.equal(model.state_dict()[key], value), key
        if out_type == 'cls_token':
            assert torch.equal(src(x)[0], model.eval()(x)[0])

    by_init_cfg = CvT(arch=TINY, out_type=out_type,
                      init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    by_init_cfg.init_weights()
    same(by_init_cfg)
    by_load_state_dict = CvT(arch=TINY, out_type=out_type)
    by_load_state_dict.load_state_dict(state, strict=True)
    same(by_load_state_dict)
    by_load_checkpoint = CvT(arch=TINY, out_type=out_type)
    load_checkpoint(by_load_checkpoint, str(path), strict=True)
    same(by_load_checkpoint)
    by_pretrained = CvT(arch=TINY, out_type=out_type, pretrained=str(path))
    by_pretrained.init_weights()
    same(by_pretrained)


def test_whole_model_checkpoints_give_their_backbone(tmp_path):
    torch.manual_seed(1)
    src = CvT(arch=TINY)
    state = {f'backbone.{k}': v for k, v in src.state_dict().items()}
    state['neck.conv.weight'] = torch.zeros(1)
    path = tmp_path / 'detector.pth'
    torch.save({'meta': {'epoch': 3}, 'state_dict': state}, path)
    for model in (CvT(arch=TINY, init_cfg=dict(type='Pretrained', checkpoint=str(path))),
                  CvT(arch=TINY)):
        if model.init_cfg:
            model.init_weights()
        else:
            load_checkpoint(model, str(path))
        assert all(torch.equal(v, src.state_dict()[k]) for k, v in model.state_dict().items())


def test_a_checkpoint_of_another_arch_is_refused_and_nothing_loads(tmp_path):
    _, _, path = make_official(tmp_path)
    model = CvT(arch=dict(embed_dims=[16, 32, 64], depths=[1, 1, 2], num_heads=[1, 2, 4]),
                init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match=r"'.*official.pth' is a CvT of another arch: "
                                              r'stage 2 embeds with \(48, 32, 3, 3\) in the '
                                              r'checkpoint vs width 64 and kernel 3 in the model'):
        model.init_weights()
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    deeper = CvT(arch=dict(TINY, depths=[1, 1, 3]),
                 init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    with pytest.raises(CheckpointError, match=r'stage 2 has 2 blocks in the checkpoint vs 3 in '
                                              r'the model'):
        deeper.init_weights()


def test_another_depth_is_refused_by_mmengines_lenient_loaders_too(tmp_path):
    """``load_checkpoint`` and ``load_state_dict(strict=False)`` would only warn about the
    missing blocks; the arch check where the weights are loaded (CvT's load hook) refuses."""
    _, state, path = make_official(tmp_path)
    deeper = CvT(arch=dict(TINY, depths=[1, 1, 3]))
    with pytest.raises(CheckpointError, match=r'stage 2 has 2 blocks'):
        load_checkpoint(deeper, str(path))
    with pytest.raises(CheckpointError, match=r'stage 2 has 2 blocks'):
        deeper.load_state_dict(state, strict=False)


def test_a_patch_embedding_that_is_no_convolution_is_one_error(tmp_path):
    _, state, path = make_official(tmp_path)
    state['stage0.patch_embed.proj.weight'] = torch.tensor(1.)
    with pytest.raises(CheckpointError, match=r'stage 0 embeds with \(\) in the checkpoint'):
        CvT(arch=TINY).load_state_dict(state)
    with pytest.raises(CheckpointError, match=r'not that of a square convolution'):
        canonical_checkpoint(state, 'x')


def test_foreign_state_dict_is_refused(tmp_path):
    path = tmp_path / 'resnet.pth'
    torch.save({'conv1.weight': torch.zeros(8, 3, 7, 7), 'fc.weight': torch.zeros(2, 8)}, path)
    model = CvT(arch=TINY, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    with pytest.raises(CheckpointError, match=r'resnet.pth.*does not fit.*unexpected keys '
                                              r'conv1.weight'):
        model.init_weights()


def test_no_keys_under_an_explicit_prefix_is_named(tmp_path):
    _, _, path = make_official(tmp_path)
    model = CvT(arch=TINY, init_cfg=dict(type='Pretrained', checkpoint=str(path),
                                         prefix='backbone.'))
    with pytest.raises(CheckpointError, match="no keys under the prefix 'backbone.'"):
        model.init_weights()


def test_canonical_layout_is_an_mmpretrain_classifier(tmp_path):
    _, state, _ = make_official(tmp_path)
    canonical = canonical_checkpoint(state, 'x')
    keys = set(canonical['state_dict'])
    assert 'backbone.stages.0.patch_embed.projection.weight' in keys
    assert {'head.fc.weight', 'head.fc.bias', 'backbone.cls_norm.weight'} <= keys
    assert canonical['meta']['cvt_format'] == 'official'
    assert canonical['meta']['arch']['embed_dims'] == TINY['embed_dims']
    assert not hasattr(canonical['state_dict'], '_metadata')  # no side channel to the hook
    ours = {'state_dict': {'w': torch.zeros(1)}}
    assert canonical_checkpoint(ours, 'x') is ours


def test_state_dict_diff_names_each_kind_of_difference():
    diff = diff_state_dict({'a': torch.zeros(2), 'b': torch.zeros(1)},
                           {'a': torch.zeros(3), 'c': torch.zeros(1)})
    assert diff.missing == ['b'] and diff.unexpected == ['c']
    assert diff.describe() == ('shape mismatch for a: checkpoint (3,) vs model (2,); missing '
                               'keys b; unexpected keys c')
    assert not diff_state_dict({'a': torch.zeros(1)}, {'a': torch.ones(1)})


def test_a_checkpoint_must_fill_the_whole_model():
    model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.BatchNorm1d(3))
    state = model.state_dict()
    check_checkpoint_fits(model, {'state_dict': {**state, 'extra.weight': torch.zeros(1)}}, 'c')
    check_checkpoint_fits(model, {f'module.{k}': v for k, v in state.items()}, 'c')
    with pytest.raises(CheckpointError, match=r"c does not fit .*: missing keys 1\.running_mean"):
        check_checkpoint_fits(model, {k: v for k, v in state.items() if 'running_mean' not in k},
                              'c')
    with pytest.raises(CheckpointError, match=r'shape mismatch for 0\.weight: checkpoint \(3, 3\) '
                                              r'vs model \(3, 2\)'):
        check_checkpoint_fits(model, {**state, '0.weight': torch.zeros(3, 3)}, 'c')
    with pytest.raises(CheckpointError, match=r'missing keys 0\.weight.*; unexpected keys '
                                              r'head\.fc\.weight'):
        check_checkpoint_fits(model, {'head.fc.weight': torch.zeros(1)}, 'c')
    with pytest.raises(CheckpointError, match='does not hold a state dict of tensors'):
        check_checkpoint_fits(model, {'state_dict': {'a': 1}}, 'c')


@pytest.mark.parametrize('layout', ['state_dict', 'model', 'module', 'plain', 'prefixed'])
def test_the_check_before_mmengine_reads_the_weights_where_mmengine_loads_them(layout):
    """With MMENGINE_WRAPPER the check passes exactly when MMEngine's own loader fills the
    model: weights under 'model' or 'module' are not loaded by it, so they are refused."""
    from mmengine.runner.checkpoint import _load_checkpoint_to_model
    source = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.BatchNorm1d(3))
    state = {k: v + 1 for k, v in source.state_dict().items()}
    checkpoint = {'plain': state, 'prefixed': {f'module.{k}': v for k, v in state.items()}}.get(
        layout, {layout: state, 'meta': {}})
    model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.BatchNorm1d(3))
    _load_checkpoint_to_model(model, checkpoint)
    filled = all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    try:
        check_checkpoint_fits(model, checkpoint, 'c', MMENGINE_WRAPPER)
        passed = True
    except CheckpointError as err:
        assert 'c does not hold a state dict' in str(err)
        passed = False
    assert passed == filled == (layout in ('state_dict', 'plain', 'prefixed'))
    check_checkpoint_fits(model, checkpoint, 'c')  # the package's own loaders look further


def test_a_model_is_compared_on_the_meta_device_before_it_is_built():
    """A stated size that no tensor of the file has is found without allocating it."""
    state = CvT(arch=TINY).state_dict()
    assert not diff_on_meta(lambda: CvT(arch=TINY), state)
    huge = dict(TINY, embed_dims=[16, 32, 4096 * 8], num_heads=[1, 2, 512])
    diff = diff_on_meta(lambda: CvT(arch=huge), state)  # 40 GB of weights, never allocated
    assert diff.mismatched and diff.mismatched[0].startswith('stages.2.')


@pytest.mark.parametrize('meta, problem', [
    ({'classes': ['a', 'b'], 'CLASSES': 42}, 'has keys that differ only in case'),
    ({'Classes': 'ab'}, 'classes is not a list of class names'),
    ({'classes': ['a', 'c\x1b[2J']}, r'classes is not a list of class names \(printable'),
    ({'classes': ['a' * 257]}, r'classes is not a list of class names \(printable'),
    ({'classes': ['']}, r'classes is not a list of class names \(printable'),
    ({1: ['a']}, 'has keys that are not str'),
    ({'classes': ['a'], 'PALETTE': [[0, 0, 256]]}, 'palette is not one RGB triple'),
])
def test_dataset_meta_is_checked_as_the_toolboxes_read_it(meta, problem):
    """mmdet's inferencer lower-cases the keys, the last of a case-blind pair winning: what
    it would read is what is checked."""
    with pytest.raises(CheckpointError, match=rf'^c: its meta\.dataset_meta[ .]{problem}'):
        check_dataset_meta(meta, 'c')
    check_dataset_meta({'CLASSES': ['a', 'b'], 'palette': [[0, 0, 0], [1, 2, 3]]}, 'c')


def test_dataset_meta_names_every_class_the_model_predicts():
    head = torch.nn.Module()
    head.num_classes = 3
    model = torch.nn.Sequential(torch.nn.Linear(1, 1), head)
    assert predicted_classes(model) == 3 and predicted_classes(torch.nn.Linear(1, 1)) == 0
    with pytest.raises(CheckpointError, match=r'^c: its meta\.dataset_meta\.classes has 2 '
                                              r'name\(s\) where the model predicts 3 classes$'):
        check_dataset_meta({'classes': ['a', 'b']}, 'c', predicted_classes(model))
    check_dataset_meta({'classes': ['a', 'b', 'c']}, 'c', predicted_classes(model))
