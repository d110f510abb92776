"""The README says what is true: its links resolve, the files it names exist, the messages
and figures it quotes are the ones the code prints."""
import re
import subprocess

import pytest
import torch

from cvt_backbone import CheckpointError, CvT, read_checkpoint
from cvt_backbone.engine import ConfigError, check_model_config
from tests.checkpoint import crafted
from tests.helpers import ROOT, TINY, run_tool

README = (ROOT / 'README.md').read_text()


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    return re.sub(r'[^\w\- ]', '', heading.strip().lower()).replace(' ', '-')


HEADINGS = [line.lstrip('#').strip() for line in README.splitlines()
            if re.match(r'^#{1,4} ', line)]


def test_every_link_to_a_section_resolves():
    anchors = {slug(h) for h in HEADINGS}
    links = set(re.findall(r'\]\(#([^)]+)\)', README))
    assert links and not links - anchors, sorted(links - anchors)


def test_every_section_the_code_cites_exists():
    cited = set()
    for path in [*ROOT.glob('cvt_backbone/**/*.py'), *ROOT.glob('tools/**/*.py'),
                 *ROOT.glob('configs/**/*.py')]:
        cited |= set(re.findall(r'"([A-Z][^"]{3,80})" in README', path.read_text()))
        cited |= set(re.findall(r'README, "([^"]+)"', path.read_text()))
    assert cited, 'no citation found: the pattern is stale'
    assert not cited - set(HEADINGS), sorted(cited - set(HEADINGS))


def test_every_file_the_readme_names_exists():
    named = set(re.findall(r'(?<![\w/.])((?:tools|configs|cvt_backbone|tests|docs)/[\w./-]+'
                           r'\.(?:py|sh|png|md))', README))
    assert len(named) > 20
    assert not [n for n in named if not (ROOT / n).exists()], \
        sorted(n for n in named if not (ROOT / n).exists())


def quoted(message: str) -> None:
    assert message in README, f'the README does not quote what the code says:\n{message}'


def test_quoted_checkpoint_messages_are_the_codes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    crafted.os_system(tmp_path).rename(tmp_path / 'evil.pth')
    with pytest.raises(CheckpointError) as refused:
        read_checkpoint('evil.pth')
    quoted(f'error: {refused.value}')
    crafted.stride_zero(tmp_path).rename(tmp_path / 'bomb.pth')
    with pytest.raises(CheckpointError) as bomb:
        read_checkpoint('bomb.pth')
    quoted(f'error: {bomb.value}')
    torch.save(CvT(arch=dict(TINY, embed_dims=[16, 32, 64], num_heads=[1, 2, 4])).state_dict(),
               'other.pth')
    model = CvT(arch=TINY, init_cfg=dict(type='Pretrained', checkpoint='other.pth'))
    with pytest.raises(CheckpointError) as other:
        model.init_weights()
    quoted(f'error: {other.value}')


def test_quoted_config_message_is_the_codes():
    from mmengine.config import Config
    cfg = Config(dict(model=dict(backbone=dict(type='CvT', arch='cvt-13'),
                                 neck=dict(type='FPN', in_channels=[256, 512, 1024, 2048]))))
    with pytest.raises(ConfigError) as error:
        check_model_config(cfg)
    quoted(f'error: {error.value}')


def test_the_flop_figures_are_what_get_flops_prints():
    result = run_tool('analysis_tools/get_flops.py', 'cvt-13', timeout=300)
    printed = re.search(r'^FLOPs: .*$', result.stdout, re.M)[0]
    assert f'`{printed.split("  ")[0]}`' in README, printed


def test_the_demo_command_in_the_readme_is_the_makefile_target():
    make = subprocess.run(['make', '-n', 'demo', 'test'], cwd=ROOT, capture_output=True,
                          text=True)
    assert make.returncode == 0 and 'tools/demo/run_demo.py' in make.stdout
    assert 'make demo' in README and 'make test' in README
