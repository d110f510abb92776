"""MMEngine's loading made safe by :class:`SafeLoadingHook` / :func:`use_safe_loading`:
every scheme reads through this package's reader, config text stored in a checkpoint never
runs, what a checkpoint says about files is never acted on."""
import json
import textwrap

import pytest
import torch
from mmengine.runner import CheckpointLoader, load_checkpoint

from cvt_backbone import CheckpointError, CvT, read_checkpoint
from cvt_backbone.training import loading
from tests.checkpoint import crafted
from tests.helpers import TINY, serve, tiny_cls_config, train

pytestmark = pytest.mark.usefixtures('safe_loading')


def payload(marker) -> str:
    """Config text that creates ``marker`` when MMEngine runs it as Python."""
    return f"import os\nos.system('touch {marker}')\nmodel = dict(type='ImageClassifier')\n"


# ----------------------------------------------------------------------------- schemes
def test_every_scheme_reads_through_the_safe_reader():
    loaders = {CheckpointLoader._get_checkpoint_loader(path) for path in (
        'a.pth', 'https://x/a.pth', 'http://x/a.pth', 'torchvision://resnet50',
        'modelzoo://resnet50', 'open-mmlab://x', 'openmmlab://x', 'mmcls://x', 's3://b/a.pth',
        'petrel://b/a.pth', 'pavi://a')}
    assert loaders <= set(loading.SCHEMES.values())


def test_the_hook_registers_them_before_the_runner_reads_anything(tmp_path, shapes_cls):
    """A Runner of a config naming SafeLoadingHook, built by MMEngine itself: before_run
    (which MMEngine calls before load_or_resume and init_weights) registers the loaders."""
    from mmengine.config import Config
    from mmengine.runner import Runner

    from tests.helpers import DEMO_CLS_CONFIG
    CheckpointLoader._schemes.pop('', None)
    CheckpointLoader.register_scheme('', lambda *args: 'unsafe', force=True)
    cfg = Config.fromfile(str(DEMO_CLS_CONFIG))
    cfg.work_dir = str(tmp_path)
    runner = Runner.from_cfg(cfg)
    assert CheckpointLoader._get_checkpoint_loader('a.pth')('a.pth') == 'unsafe'
    runner.call_hook('before_run')
    assert CheckpointLoader._get_checkpoint_loader('a.pth') is loading.load_from_local


def test_open_mmlab_names_of_local_files_are_read_safely(tmp_path, monkeypatch):
    monkeypatch.setenv('MMENGINE_HOME', str(tmp_path))
    monkeypatch.setenv('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '1')
    crafted.os_system(tmp_path)
    (tmp_path / 'open_mmlab.json').write_text(json.dumps({'evil': 'os_system.pth'}))
    with pytest.raises(CheckpointError, match=r'os_system.pth.*needs posix.system'):
        load_checkpoint(CvT(arch=TINY), 'open-mmlab://evil')
    assert not (tmp_path / crafted.MARKER).exists()


def test_a_legacy_zip_download_is_never_unpacked_into_the_hub_cache(tmp_path, monkeypatch):
    """torch.hub extracts an old-style zip (one file inside) under the name the zip chose;
    this reader downloads to a name of its own and refuses the archive."""
    import mmengine.runner.checkpoint as mmengine_checkpoint
    served = tmp_path / 'served'
    served.mkdir()
    torch.save({'w': torch.zeros(1)}, tmp_path / 'resnet50-11ad3fa6.pth')
    import zipfile
    with zipfile.ZipFile(served / 'resnet50.zip', 'w') as archive:
        archive.write(tmp_path / 'resnet50-11ad3fa6.pth', 'resnet50-11ad3fa6.pth')
    torch.hub.set_dir(str(tmp_path / 'hub'))
    try:
        with serve(served) as base:
            monkeypatch.setattr(mmengine_checkpoint, 'get_torchvision_models',
                                lambda: {'resnet50': f'{base}/resnet50.zip'})
            with pytest.raises(CheckpointError, match='not one written by torch.save'):
                load_checkpoint(CvT(arch=TINY), 'torchvision://resnet50')
    finally:
        monkeypatch.setattr(torch.hub, '_hub_dir', None)
    cached = [p.name for p in (tmp_path / 'hub').rglob('*') if p.is_file()]
    assert len(cached) == 1 and cached[0].endswith('-resnet50.zip')


# ----------------------------------------------------------------------------- config text
def checkpoint_with_config_text(path, marker, state=None) -> None:
    torch.save({'meta': {'config': payload(marker), 'cfg': payload(marker), 'epoch': 1,
                         'iter': 1},
                'state_dict': state or CvT(arch=TINY).state_dict(),
                'message_hub': {'log_scalars': {}, 'resumed_keys': {},
                                'runtime_info': {'cfg': payload(marker)}}}, path)


def test_config_text_is_removed_on_every_mmengine_load(tmp_path):
    marker = tmp_path / crafted.MARKER
    checkpoint_with_config_text(tmp_path / 'evil.pth', marker)
    loaded = load_checkpoint(CvT(arch=TINY), str(tmp_path / 'evil.pth'))
    assert 'config' not in loaded['meta'] and 'cfg' not in loaded['meta']
    assert 'cfg' not in loaded['message_hub']['runtime_info']
    assert loaded['meta']['epoch'] == 1
    assert not marker.exists()


@pytest.mark.parametrize('toolbox', ['mmdet', 'mmseg'])
def test_inferencers_given_weights_but_no_config_never_run_its_text(tmp_path, toolbox):
    """MMEngine's inferencers build the model from config text in the checkpoint when given
    no config; the text is gone, so MMEngine stops with its own error."""
    marker = tmp_path / crafted.MARKER
    path = tmp_path / 'evil.pth'
    checkpoint_with_config_text(path, marker)
    if toolbox == 'mmdet':
        from mmdet.apis import DetInferencer as Inferencer
    else:
        from mmseg.apis import MMSegInferencer as Inferencer
    with pytest.raises(ValueError, match='Cannot find the config in the checkpoint'):
        Inferencer(None, weights=str(path), device='cpu')
    assert not marker.exists()


@pytest.fixture(scope='module')
def trained(shapes_cls, tmp_path_factory):
    """A two-epoch run of the tiny classifier (its warm-up is the first epoch): its config
    and work dir."""
    tmp = tmp_path_factory.mktemp('trained')
    config = tiny_cls_config(tmp / 'cfg.py', shapes_cls, max_epochs=2)
    train(config, tmp / 'work')
    return config, tmp / 'work'


@pytest.mark.slow
def test_resume_never_runs_config_text_nor_deletes_named_files(trained, tmp_path):
    """``meta.config`` is what Runner.resume evaluates; ``best_ckpt`` what CheckpointHook
    deletes when a better checkpoint comes. Neither is acted on."""
    config, work = trained
    marker, victim = tmp_path / crafted.MARKER, tmp_path / 'victim.txt'
    victim.write_text('precious')
    checkpoint = read_checkpoint(work / 'epoch_1.pth')
    checkpoint['meta']['config'] = payload(marker)
    checkpoint['message_hub']['runtime_info'].update(
        cfg=payload(marker), best_ckpt=str(victim), best_score=-1.0)
    torch.save(checkpoint, tmp_path / 'evil.pth')
    best = tmp_path / 'best.py'
    best.write_text(textwrap.dedent(f"""
        _base_ = {str(config)!r}
        train_cfg = dict(max_epochs=2, val_interval=1)
        default_hooks = dict(checkpoint=dict(save_best='auto'))
    """))
    result = train(best, tmp_path / 'work', '--resume', tmp_path / 'evil.pth')
    assert 'resumed epoch: 1' in result.stdout + result.stderr
    assert (tmp_path / 'work' / 'best_accuracy_top1_epoch_2.pth').exists()
    assert victim.read_text() == 'precious' and not marker.exists()


def test_sanitizing_drops_config_text_file_claims_and_unusable_seeds():
    checkpoint = {'meta': {'cfg': 'x', 'config': 'y', 'seed': 1 << 40, 'epoch': 3},
                  'message_hub': {'runtime_info': {
                      'best_ckpt': '/w/best_acc_epoch_3.pth', 'best_ckpt_acc': '/etc/passwd',
                      'last_ckpt': '/w/epoch_3.pth', 'keep_ckpt_ids': [1, 2],
                      'outdated_ckpt_ids': [0], 'cfg': 'z', 'best_score': 0.5}}}
    loading.sanitize_checkpoint(checkpoint)
    assert checkpoint['meta'] == {'epoch': 3}
    assert checkpoint['message_hub']['runtime_info'] == {'best_score': 0.5}
    kept = {'meta': {'seed': 7}}
    assert loading.sanitize_checkpoint(kept) == {'meta': {'seed': 7}}
    assert loading.sanitize_checkpoint([1]) == [1]
