"""``import cvt_backbone`` registers CvT and changes nothing of MMEngine; ``import
cvt_backbone.engine`` is the one opt-in that does, and the project's configs name it.

Each check runs in a fresh interpreter: within the test process another test has long
imported the engine module.
"""
import ast
import json
import subprocess
import sys
import textwrap

import pytest

from tests.helpers import ENV, ROOT

#: What the engine module changes, each as an expression whose value is compared by identity.
WATCHED = {
    'schemes': 'dict(CheckpointLoader._schemes)',
    'lookup': "CheckpointLoader.__dict__['_get_checkpoint_loader'].__func__",
    'load_url': 'mmengine.runner.checkpoint.load_url',
    'init_model': 'BaseInferencer._init_model',
    'local_backend': "mmengine.fileio.backends.registry_utils.backends['local']",
    'local_prefix': "mmengine.fileio.backends.registry_utils.prefix_to_backends['']",
}

SNAPSHOT = textwrap.dedent("""
    import json, sys
    import mmengine.fileio.backends.registry_utils
    import mmengine.runner.checkpoint
    from mmengine.infer import BaseInferencer
    from mmengine.runner import CheckpointLoader

    def snapshot():
        values = {name: eval(expression) for name, expression in WATCHED.items()}
        values['schemes'] = {k: id(v) for k, v in values['schemes'].items()}
        return {k: v if k == 'schemes' else id(v) for k, v in values.items()}

    before = snapshot()
    import cvt_backbone
    after_package = snapshot()
    engine_loaded = 'cvt_backbone.engine' in sys.modules
    import cvt_backbone.engine
    after_engine = snapshot()
    print(json.dumps(dict(before=before, after_package=after_package,
                          after_engine=after_engine, engine_loaded=engine_loaded)))
""")


@pytest.mark.slow
def test_only_the_engine_module_changes_mmengine():
    script = f'WATCHED = {WATCHED!r}\n' + SNAPSHOT
    result = subprocess.run([sys.executable, '-c', script], cwd=ROOT, env=ENV,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert not seen['engine_loaded']
    assert seen['after_package'] == seen['before']
    changed = [name for name in WATCHED if seen['after_engine'][name] != seen['before'][name]]
    assert changed == list(WATCHED)


@pytest.mark.slow
def test_cvt_loaders_read_safely_without_the_engine_module(tmp_path):
    """init_cfg, ``pretrained=`` and load_cvt_weights take the package's reader, opt-in or
    not: a pickle that would run code is refused by name and runs nothing."""
    from tests.checkpoint import crafted
    path = crafted.os_system(tmp_path)
    script = textwrap.dedent(f"""
        import sys
        import cvt_backbone
        from cvt_backbone import CheckpointError, CvT, load_cvt_weights
        arch = dict(embed_dims=[16, 32, 48], depths=[1, 1, 2], num_heads=[1, 2, 3])
        attempts = dict(
            init_cfg=lambda: CvT(arch=arch, init_cfg=dict(type='Pretrained',
                                 checkpoint={str(path)!r})).init_weights(),
            pretrained=lambda: CvT(arch=arch, pretrained={str(path)!r}).init_weights(),
            load_cvt_weights=lambda: load_cvt_weights(CvT(arch=arch), {str(path)!r}))
        for name, attempt in attempts.items():
            try:
                attempt()
                print(name, 'loaded')
            except CheckpointError as err:
                print(name, 'refused' if 'posix.system' in str(err) else err)
        print('engine', 'cvt_backbone.engine' in sys.modules)
    """)
    result = subprocess.run([sys.executable, '-c', script], cwd=ROOT, env=ENV,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split('\n')[-5:-1] == [
        'init_cfg refused', 'pretrained refused', 'load_cvt_weights refused', 'engine False']
    assert not (tmp_path / crafted.MARKER).exists()


def literal(node: ast.expr) -> object:
    """A literal, or ``dict(key=literal, ...)``, of a config file."""
    if isinstance(node, ast.Call) and getattr(node.func, 'id', None) == 'dict':
        return {keyword.arg: literal(keyword.value) for keyword in node.keywords}
    return ast.literal_eval(node)


def assignments(config) -> dict:
    """The top-level ``custom_imports`` and ``runner_type`` of a config file."""
    tree = ast.parse(config.read_text())
    return {node.targets[0].id: literal(node.value) for node in tree.body
            if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
            and node.targets[0].id in ('custom_imports', 'runner_type')}


def test_every_config_that_imports_the_package_names_the_engine_and_its_runner():
    configs = [assignments(c) | {'file': c.name} for c in sorted((ROOT / 'configs').rglob('*.py'))]
    naming = [c for c in configs if 'custom_imports' in c]
    assert len(naming) >= 8
    for config in naming:
        assert config['custom_imports'] == dict(imports=['cvt_backbone', 'cvt_backbone.engine'],
                                                allow_failed_imports=False), config
        assert config['runner_type'] == 'CvTRunner', config
