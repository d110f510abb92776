"""CompleteCheckpointHook on a resume: a checkpoint whose training state has another shape
than the run's own, or whose averaged weights do not fill the model, is refused with one
CheckpointError naming the file and the entry, before anything is restored.

A toy model on MMEngine's own Runner trains one epoch, saving a checkpoint; each case edits
one entry of it and resumes.
"""
from __future__ import annotations

import copy
import re

import pytest
import torch
from mmengine.model import BaseModel
from mmengine.runner import Runner

from cvt_backbone import CheckpointError, read_checkpoint
from cvt_backbone.checkpoint.write import atomic_save
from cvt_backbone.training import CompleteCheckpointHook


class Toy(BaseModel):
    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(2, 1)

    def forward(self, inputs, targets=None, mode='tensor'):
        outputs = self.linear(inputs)
        return dict(loss=((outputs - targets) ** 2).mean()) if mode == 'loss' else outputs


DATA = [dict(inputs=torch.ones(2) * i, targets=torch.ones(1)) for i in range(4)]


def runner(work_dir, max_epochs: int = 2, resume: bool = False, **kwargs) -> Runner:
    return Runner(
        model=Toy(), work_dir=str(work_dir),
        train_dataloader=dict(dataset=DATA, batch_size=2, num_workers=0,
                              sampler=dict(type='SeededDefaultSampler', shuffle=True),
                              collate_fn=dict(type='default_collate')),
        train_cfg=dict(by_epoch=True, max_epochs=max_epochs),
        optim_wrapper=dict(optimizer=dict(type='AdamW', lr=0.01, betas=(0.9, 0.99))),
        param_scheduler=dict(type='CosineAnnealingLR', T_max=2, by_epoch=True),
        default_hooks=dict(checkpoint=dict(type='SafeCheckpointHook', interval=1),
                           logger=None),
        custom_hooks=[dict(type='SafeLoadingHook'), dict(type='RandomStateHook', resume=resume)],
        randomness=dict(seed=0),
        resume=resume, **kwargs)


@pytest.fixture(scope='module')
def saved(tmp_path_factory):
    import cvt_backbone.training  # noqa: F401  (registers the hooks and sampler)
    work_dir = tmp_path_factory.mktemp('toy')
    runner(work_dir, max_epochs=1).train()
    return read_checkpoint(str(work_dir / 'epoch_1.pth'))


CASES = {
    'runtime_info int key': (lambda c: c['message_hub']['runtime_info'].__setitem__(7, 'x'),
                             'its message_hub is not the state MMEngine writes'),
    'scheduler step is text': (lambda c: c['param_schedulers'][0].__setitem__('last_step', 'x'),
                               r"its param_schedulers\[0\]\['last_step'\] is the str 'x' where "
                               r'this run has a int'),
    'scheduler optimizer': (lambda c: c['param_schedulers'][0].__setitem__('optimizer', {}),
                            r"its param_schedulers\[0\] has keys this run does not: "
                            r"'optimizer'"),
    'lr is text': (lambda c: c['optimizer']['param_groups'][0].__setitem__('lr', 'fast'),
                   r"its optimizer param_groups\[0\]\['lr'\] is the str 'fast'"),
    'betas an int': (lambda c: c['optimizer']['param_groups'][0].__setitem__('betas', 3),
                     r"its optimizer param_groups\[0\]\['betas'\] is a int, not a tuple"),
    'iteration 2**70': (lambda c: c['meta'].__setitem__('iter', 2 ** 70),
                        'epoch and iter counters from 0 to 2\\*\\*31'),
    'epoch 10**300': (lambda c: c['meta'].__setitem__('epoch', 10 ** 300),
                      'epoch and iter counters from 0 to 2\\*\\*31'),
    'sampler seed text': (lambda c: c['meta']['cvt_random_state'].__setitem__('sampler_seed',
                                                                              'x'),
                          'its random state is malformed'),
    'sampler seed 2**80': (lambda c: c['meta']['cvt_random_state'].__setitem__('sampler_seed',
                                                                               2 ** 80),
                           'its random state is malformed'),
    'world size a float': (lambda c: c['meta']['cvt_random_state'].__setitem__('world_size',
                                                                               1.0),
                           'its random state is malformed'),
    'ema weight of another shape': (
        lambda c: c.__setitem__('ema_state_dict', {
            'steps': torch.tensor(1), 'module.linear.weight': torch.zeros(1),
            'module.linear.bias': torch.zeros(1)}),
        r"\(its ema_state_dict\) does not fit the model of this config: shape mismatch for "
        r'linear\.weight'),
    'weights under model': (lambda c: c.__setitem__('model', c.pop('state_dict')),
                            r"does not hold a state dict of tensors under str keys, neither "
                            r"under 'state_dict' nor as a whole"),
    'two keys loading into one': (
        lambda c: c['state_dict'].__setitem__('module.linear.weight', torch.zeros(1)),
        r"has two keys that load into 'linear\.weight'"),
    'a key renamed by one pattern only': (
        lambda c: c['state_dict'].__setitem__('moduleXlinear.weight', torch.zeros(1)),
        r"has keys moduleXlinear\.weight that MMEngine's loaders rename or not"),
}


@pytest.mark.parametrize('case', CASES)
def test_a_training_state_of_another_shape_is_refused(saved, tmp_path, case):
    change, error = CASES[case]
    checkpoint = copy.deepcopy(saved)
    change(checkpoint)
    path = str(tmp_path / 'edited.pth')
    atomic_save(checkpoint, path)
    resumed = runner(tmp_path / 'work', load_from=path, resume=True)
    resumed.register_hook(CompleteCheckpointHook(path, training_state=True))
    with pytest.raises(CheckpointError, match=error) as caught:
        resumed.train()
    assert re.search(re.escape(path), str(caught.value)), str(caught.value)
    assert resumed.iter == 0 and not (tmp_path / 'work' / 'epoch_2.pth').exists()


def test_the_unedited_checkpoint_resumes(saved, tmp_path):
    path = str(tmp_path / 'same.pth')
    atomic_save(copy.deepcopy(saved), path)
    resumed = runner(tmp_path / 'work', load_from=path, resume=True)
    resumed.register_hook(CompleteCheckpointHook(path, training_state=True))
    resumed.train()
    assert resumed.epoch == 2


def test_the_recipes_random_state_hook_refuses_a_malformed_seed_on_its_own(saved, tmp_path):
    """On a Runner with the recipes' hooks only (the toolboxes' own train.py)."""
    checkpoint = copy.deepcopy(saved)
    checkpoint['meta']['cvt_random_state']['sampler_seed'] = 2 ** 80
    path = str(tmp_path / 'edited.pth')
    atomic_save(checkpoint, path)
    resumed = runner(tmp_path / 'work', load_from=path, resume=True)
    with pytest.raises(CheckpointError, match='its random state is malformed'):
        resumed.train()
