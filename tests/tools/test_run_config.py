"""What tools/train.py and tools/test.py do to a config before MMEngine's Runner
(tools/run_config.py): ``--cfg-options`` checked, launchers, ``--auto-scale-lr``."""
import pytest
from mmengine.config import Config

from cvt_backbone import ConfigError
from run_config import check_cfg_options, check_launcher, explain_option_error, prepare_config
from tests.helpers import DEMO_CLS_CONFIG


@pytest.fixture(scope='module')
def cfg() -> Config:
    return Config.fromfile(str(DEMO_CLS_CONFIG))


@pytest.mark.parametrize('key, message', [
    ('default_hooks.chekpoint.interval', r"--cfg-options default_hooks\.chekpoint\.interval: "
                                         r"default_hooks has no 'chekpoint' \(it has: \[.*"
                                         r"'checkpoint'.*\]\)"),
    ('env_cfg.cudnn_benchmar', r"--cfg-options env_cfg\.cudnn_benchmar: env_cfg has no "
                               r"'cudnn_benchmar'"),
    ('model.backbone.init_cfg.x.y', r"model\.backbone\.init_cfg has no 'x'"),
    ('param_scheduler.5.end', r"param_scheduler has no '5' \(it has: list\)"),
    ('train_cfg.max_epoch.x', r"train_cfg has no 'max_epoch'"),
])
def test_a_key_the_config_has_no_place_for_is_refused(cfg, key, message):
    with pytest.raises(ConfigError, match=message):
        check_cfg_options(cfg, {key: 1})


@pytest.mark.parametrize('key', [
    'train_cfg.max_epochs',                # there
    'param_scheduler.0.end',               # an item of a list
    'experiment_name',                     # a new top-level entry
    'optim_wrapper.optimizer.betas',       # an argument of a part with a type
    'train_dataloader.dataset.dataset.data_root',
    # arguments of parts the Runner builds from keyword arguments alone
    'train_cfg.val_begin', 'val_cfg.fp16', 'randomness.diff_rank_seed',
    'train_dataloader.prefetch_factor', 'env_cfg.dist_cfg.timeout',
    'optim_wrapper.accumulative_counts',
])
def test_keys_the_config_has_or_its_parts_take_pass(cfg, key):
    check_cfg_options(cfg, {key: 1})


def test_mmengines_refusal_of_an_argument_names_the_option():
    err = TypeError("AdamW.__init__() got an unexpected keyword argument 'lrr'")
    explained = explain_option_error(err, {'optim_wrapper.optimizer.lrr': 1, 'x.y': 2})
    assert isinstance(explained, ConfigError)
    assert str(explained) == ("--cfg-options optim_wrapper.optimizer.lrr: AdamW.__init__() got "
                              "an unexpected keyword argument 'lrr'")
    other = KeyError('lrr')
    assert explain_option_error(other, {'a.lrr': 1}) is other
    assert explain_option_error(err, None) is err


def test_a_launcher_without_its_environment_says_what_starts_it(monkeypatch):
    for name in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT', 'SLURM_PROCID'):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigError, match=r'--launcher pytorch needs the environment torchrun '
                                          r'\(tools/dist_train\.sh, tools/dist_test\.sh\)'):
        check_launcher('pytorch')
    with pytest.raises(ConfigError, match=r'srun \(tools/slurm_train\.sh'):
        check_launcher('slurm')
    check_launcher('none')
    for name, value in (('RANK', '0'), ('WORLD_SIZE', '1'), ('MASTER_ADDR', 'localhost'),
                        ('MASTER_PORT', '29500')):
        monkeypatch.setenv(name, value)
    check_launcher('pytorch')


def test_auto_scale_lr_turns_on_the_configs_base_batch_size():
    cfg = Config(dict(auto_scale_lr=dict(base_batch_size=256)))
    prepare_config(cfg, 'x.py', auto_scale_lr=True)
    assert cfg.auto_scale_lr == dict(base_batch_size=256, enable=True)
    untouched = Config(dict(auto_scale_lr=dict(base_batch_size=256)))
    prepare_config(untouched, 'x.py')
    assert 'enable' not in untouched.auto_scale_lr
    for written in ({}, dict(auto_scale_lr=dict(enable=True))):
        with pytest.raises(ConfigError, match=r'--auto-scale-lr: x\.py has no auto_scale_lr\.'
                                              r'base_batch_size, the total batch its learning '
                                              r'rate is for'):
            prepare_config(Config(written), 'x.py', auto_scale_lr=True)
