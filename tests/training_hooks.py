"""A test-only MMEngine hook, loaded by the training configs the tests write (custom_imports).

Kept outside ``test_*.py`` so that pytest does not collect it; the tests put ``tests/`` on
``PYTHONPATH`` of the training subprocesses.
"""
from __future__ import annotations

import os.path as osp

import torch
from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS


@HOOKS.register_module()
class SaveRankWeightsHook(Hook):
    """Save each rank's parameters and buffers, before and after training.

    Writes ``work_dir/rank{r}_init.pth`` and ``work_dir/rank{r}.pth``, each
    ``{'params': {...}, 'buffers': {...}}``, to compare the ranks of a distributed run.
    """

    def _save(self, runner, name: str) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        state = {'params': {k: v.detach().clone() for k, v in model.named_parameters()},
                 'buffers': {k: v.clone() for k, v in model.named_buffers()}}
        torch.save(state, osp.join(runner.work_dir, name))

    def before_train(self, runner) -> None:
        self._save(runner, f'rank{get_rank()}_init.pth')

    def after_train(self, runner) -> None:
        self._save(runner, f'rank{get_rank()}.pth')
