"""CvT builds from the registries of all three toolboxes and through custom_imports."""
import subprocess
import sys
import textwrap

import pytest
import torch

import cvt_backbone

TINY = dict(embed_dims=[16, 32, 48], depths=[1, 1, 2], num_heads=[1, 2, 3])


@pytest.mark.parametrize('toolbox', ['mmpretrain', 'mmdet', 'mmseg'])
def test_builds_from_toolbox_registry(toolbox):
    model = cvt_backbone.REGISTRIES[toolbox].build(dict(type='CvT', arch=TINY))
    assert isinstance(model, cvt_backbone.CvT)
    assert model.eval()(torch.randn(1, 3, 32, 32))[0].shape == (1, 16, 8, 8)


def test_custom_imports_in_a_fresh_process(tmp_path):
    config = tmp_path / 'cfg.py'
    config.write_text(textwrap.dedent(f"""
        custom_imports = dict(imports=['cvt_backbone'], allow_failed_imports=False)
        model = dict(type='CvT', arch={TINY!r}, out_indices=(2,))
    """))
    script = textwrap.dedent(f"""
        from mmengine.config import Config
        cfg = Config.fromfile({str(config)!r})
        from mmdet.registry import MODELS as DET
        from mmseg.registry import MODELS as SEG
        from mmpretrain.registry import MODELS as CLS
        for registry in (DET, SEG, CLS):
            print(type(registry.build(cfg.model)).__name__)
    """)
    result = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ['CvT', 'CvT', 'CvT']
