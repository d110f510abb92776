"""MMEngine's loading made safe by the engine module: every scheme reads through this
package's reader, config text stored in a checkpoint never runs, checkpoint paths stored in it
are never acted on."""
import json
import os
import textwrap

import pytest
import torch
from mmengine.runner import CheckpointLoader, load_checkpoint

from cvt_backbone import CheckpointError, CvT, read_checkpoint
from cvt_backbone.engine import guard
from tests.checkpoint import crafted
from tests.helpers import TINY, serve, tiny_cls_config, train


def payload(marker) -> str:
    """Config text that creates ``marker`` when MMEngine runs it as Python."""
    return f"import os\nos.system('touch {marker}')\nmodel = dict(type='ImageClassifier')\n"


# ----------------------------------------------------------------------------- schemes
def test_every_scheme_reads_through_the_safe_reader():
    loaders = {CheckpointLoader._get_checkpoint_loader(path) for path in (
        'a.pth', 'https://x/a.pth', 'http://x/a.pth', 'torchvision://resnet50',
        'modelzoo://resnet50', 'open-mmlab://x', 'openmmlab://x', 'mmcls://x', 's3://b/a.pth',
        'petrel://b/a.pth', 'pavi://a')}
    assert loaders <= set(guard.SCHEMES.values())


def test_a_scheme_registered_later_is_refused(tmp_path):
    path = crafted.os_system(tmp_path)
    CheckpointLoader.register_scheme('late://', lambda f, m=None: torch.load(
        str(path), weights_only=False), force=True)
    try:
        with pytest.raises(CheckpointError, match=r"'late://x.pth': its scheme is not one that "
                                                  r'cvt_backbone reads safely'):
            load_checkpoint(CvT(arch=TINY), 'late://x.pth')
    finally:
        CheckpointLoader._schemes.pop('late://')
    assert not (tmp_path / crafted.MARKER).exists()


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
def test_inferencers_given_weights_but_no_config_refuse_by_name(tmp_path, toolbox):
    marker = tmp_path / crafted.MARKER
    path = tmp_path / 'evil.pth'
    checkpoint_with_config_text(path, marker)
    if toolbox == 'mmdet':
        from mmdet.apis import DetInferencer as Inferencer
    else:
        from mmseg.apis import MMSegInferencer as Inferencer
    with pytest.raises(ValueError, match=r"was given weights \('.*evil.pth'\) but no config: "
                                         r'pass the config file as model='):
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
    assert 'ignored message_hub.runtime_info' in result.stdout + result.stderr
    assert (tmp_path / 'work' / 'best_accuracy_top1_epoch_2.pth').exists()
    assert victim.read_text() == 'precious' and not marker.exists()


def test_sanitizing_keeps_checkpoint_paths_beside_the_checkpoint(tmp_path):
    beside = str(tmp_path / 'best_acc_epoch_3.pth')
    checkpoint = {'meta': {'cfg': 'x'}, 'message_hub': {'runtime_info': {
        'best_ckpt': beside, 'best_ckpt_acc': '/etc/passwd', 'last_ckpt': 3,
        'keep_ckpt_ids': [1, '../../x']}}}
    guard.sanitize_checkpoint(checkpoint, str(tmp_path / 'epoch_3.pth'))
    assert checkpoint['meta'] == {}
    assert checkpoint['message_hub']['runtime_info'] == {'best_ckpt': beside}
    assert os.path.dirname(beside) == str(tmp_path)


def test_only_dropped_names_that_could_remove_something_are_reported(tmp_path, capsys):
    """A work dir that moved names files that are gone: dropped without a word. A name of a
    file that exists elsewhere, or ids that are not integers, are reported."""
    from mmengine.logging import MMLogger
    MMLogger.get_instance('guard_report', logger_name='guard_report')
    moved = {'message_hub': {'runtime_info': {'last_ckpt': '/gone/work/epoch_3.pth'}}}
    guard.sanitize_checkpoint(moved, str(tmp_path / 'epoch_3.pth'))
    assert moved['message_hub']['runtime_info'] == {}
    assert 'ignored message_hub.runtime_info' not in capsys.readouterr().out

    (tmp_path / 'elsewhere').mkdir()
    other = tmp_path / 'elsewhere' / 'epoch_3.pth'
    other.write_bytes(b'')
    crafted_info = {'message_hub': {'runtime_info': {
        'last_ckpt': str(other), 'keep_ckpt_ids': ['../x']}}}
    guard.sanitize_checkpoint(crafted_info, str(tmp_path / 'epoch_3.pth'))
    assert crafted_info['message_hub']['runtime_info'] == {}
    assert "ignored message_hub.runtime_info ['last_ckpt', 'keep_ckpt_ids']" in \
        capsys.readouterr().out
