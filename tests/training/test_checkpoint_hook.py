"""A kill at any moment of a checkpoint save leaves a run that resumes from a complete file;
what a checkpoint says about files is never acted on: only files this process saved in this
run are removed.

The run keeps one checkpoint (``max_keep_ckpts=1``). MMEngine's own hook removes the old
checkpoint before it writes the new one and writes ``last_checkpoint`` in place: a kill in
between left no checkpoint at all, or ``last_checkpoint`` naming a deleted file. Here each
training process is killed at one moment of the save after epoch 2 (its file operations are
announced by ``tests.save_stages``), and must then resume and end with the weights of a run
that was never interrupted.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cvt_backbone import read_checkpoint
from cvt_backbone.checkpoint.write import TMP_SUFFIX
from tests.helpers import ENV, tiny_cls_config, train, train_until

pytestmark = pytest.mark.slow

SETTINGS = """
custom_imports = dict(imports=['cvt_backbone', 'cvt_backbone.training', 'tests.save_stages'],
                      allow_failed_imports=False)
default_hooks = dict(checkpoint=dict(interval=1, max_keep_ckpts=1, save_best=None))
"""
#: The moments of the save after epoch 2, as tests.save_stages announces them.
EPOCH_2 = '@stage after replace epoch_2.pth'
MOMENTS = [
    '@stage before replace epoch_2.pth',        # the new checkpoint is a hidden temporary file
    EPOCH_2,                                    # written; last_checkpoint still names epoch 1
    (EPOCH_2, '@stage before replace last_checkpoint'),  # its new content is a temporary
    (EPOCH_2, '@stage after replace last_checkpoint'),   # names epoch 2; epoch 1 still there
    '@stage after remove epoch_1.pth',          # the old checkpoint is gone
]


@pytest.fixture(scope='module')
def config(shapes_cls, tmp_path_factory) -> Path:
    return tiny_cls_config(tmp_path_factory.mktemp('cfg') / 'cfg.py', shapes_cls,
                           max_epochs=3, extra=SETTINGS)


@pytest.fixture(scope='module')
def uninterrupted(config, tmp_path_factory) -> dict:
    work = tmp_path_factory.mktemp('uninterrupted')
    train(config, work)
    assert sorted(p.name for p in work.glob('*.pth')) == ['epoch_3.pth']
    return read_checkpoint(work / 'epoch_3.pth')['state_dict']


@pytest.mark.parametrize('moment', MOMENTS, ids=range(len(MOMENTS)))
def test_killed_while_saving_resumes_from_a_complete_checkpoint(config, uninterrupted, tmp_path,
                                                                moment):
    work = tmp_path / 'work'
    train_until(config, work, moment, env=dict(ENV, CVT_TEST_SAVE_STAGES='0.05'))
    named = Path((work / 'last_checkpoint').read_text().strip())
    assert named.is_file(), f'last_checkpoint names {named}, which does not exist'
    epoch = read_checkpoint(named)['meta']['epoch']
    assert epoch in (1, 2) and not (work / 'epoch_3.pth').exists()

    resumed = train(config, work, '--resume')
    assert f'resumed epoch: {epoch}' in resumed.stdout
    final = read_checkpoint(work / 'epoch_3.pth')['state_dict']
    different = [k for k in uninterrupted if not torch.equal(final[k], uninterrupted[k])]
    assert not different, f'{len(different)} tensors differ from the uninterrupted run'
    # the killed run's checkpoints stay (the resumed run removes only what it saved); each
    # is a complete one
    names = sorted(p.name for p in work.glob('*.pth'))
    assert 'epoch_3.pth' in names and set(names) <= {'epoch_1.pth', 'epoch_2.pth', 'epoch_3.pth'}
    assert all('state_dict' in read_checkpoint(work / name) for name in names)
    assert not list(work.rglob(f'*{TMP_SUFFIX}'))  # a killed save's temporary is cleaned


@pytest.mark.parametrize('hook', ['SafeCheckpointHook', 'CheckpointHook'])
def test_files_a_checkpoint_names_are_never_removed(shapes_cls, tmp_path, hook):
    """A checkpoint copied into a work dir claims files there (and elsewhere) as kept,
    outdated, best and last, with integer ids of files and of a folder; resuming from it
    with ``max_keep_ckpts=1`` removes none of them, with this package's checkpoint hook and
    with MMEngine's own (whose claims the package's loading strips)."""
    config = tiny_cls_config(tmp_path / 'cfg.py', shapes_cls, max_epochs=2, extra=f"""
        default_hooks = dict(checkpoint=dict(type={hook!r}, interval=1, max_keep_ckpts=1,
                                             save_best=None))
    """)
    train(config, tmp_path / 'elsewhere', '--cfg-options', 'default_hooks.checkpoint.'
          'max_keep_ckpts=-1')
    work, outside = tmp_path / 'work', tmp_path / 'outside'
    work.mkdir()
    outside.mkdir()
    precious = [work / f'epoch_{i}.pth' for i in (3, 5, 6, 9)] + [
        work / 'best_accuracy_top1_epoch_7.pth', outside / 'epoch_4.pth']
    for path in precious:
        path.write_text('precious')
    (work / 'epoch_8.pth').mkdir()  # a folder of a checkpoint's name
    (work / 'epoch_8.pth' / 'inside').write_text('precious')
    precious.append(work / 'epoch_8.pth' / 'inside')
    checkpoint = read_checkpoint(tmp_path / 'elsewhere' / 'epoch_1.pth')
    checkpoint['message_hub']['runtime_info'].update(
        keep_ckpt_ids=[3, 5, 8, 9], outdated_ckpt_ids=[6], best_ckpt=str(precious[4]),
        best_ckpt_accuracy=str(precious[5]), last_ckpt=str(precious[3]))
    torch.save(checkpoint, work / 'epoch_1.pth')

    result = train(config, work, '--resume', work / 'epoch_1.pth')
    assert 'resumed epoch: 1' in result.stdout
    assert all(path.read_text() == 'precious' for path in precious)
    assert (work / 'epoch_1.pth').is_file() and (work / 'epoch_2.pth').is_file()


def test_a_one_cycle_schedule_is_saved_as_data_and_resumes(tmp_path):
    """OneCycle keeps a bound method as an attribute; its saved state is data only, reads
    back, and a scheduler given it anneals as before."""
    from mmengine.optim.scheduler import OneCycleLR

    from cvt_backbone.checkpoint.write import atomic_save
    from cvt_backbone.training import SafeCheckpointHook

    def scheduler():
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        return optimizer, OneCycleLR(optimizer, eta_max=0.1, total_steps=10)

    optimizer, first = scheduler()
    for _ in range(3):
        optimizer.step()
        first.step()
    checkpoint = dict(param_schedulers=[first.state_dict()])
    SafeCheckpointHook().before_save_checkpoint(None, checkpoint)
    atomic_save(checkpoint, str(tmp_path / 'ckpt.pth'))
    state = read_checkpoint(str(tmp_path / 'ckpt.pth'))['param_schedulers'][0]
    assert 'anneal_func' not in state

    resumed_optimizer, resumed = scheduler()
    resumed.load_state_dict(state)
    resumed_optimizer.param_groups[0]['lr'] = optimizer.param_groups[0]['lr']
    optimizer.step(), first.step(), resumed_optimizer.step(), resumed.step()
    assert resumed_optimizer.param_groups[0]['lr'] == optimizer.param_groups[0]['lr']
