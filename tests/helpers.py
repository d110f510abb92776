"""What several test modules share: small archs, reference models, checkpoints, tool runs."""
from __future__ import annotations

import configparser
import contextlib
import importlib.util
import os
import subprocess
import sys
import threading
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import torch

from cvt_backbone import CvT
from transformers_port import build_port, port_of, randomize_norms  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
#: A small three-stage arch every test can build in milliseconds.
TINY = dict(embed_dims=[16, 32, 48], depths=[1, 1, 2], num_heads=[1, 2, 3])
#: The smallest arch the transformers port can build (it needs more than i blocks in stage i).
PORTABLE = dict(embed_dims=[16, 32, 48], depths=[1, 2, 3], num_heads=[1, 2, 3])


def _pytest_pythonpath() -> list[str]:
    """The folders pytest puts on ``sys.path`` (setup.cfg's ``pythonpath``: the tools'
    modules)."""
    config = configparser.ConfigParser()
    config.read(ROOT / 'setup.cfg')
    return [str(ROOT / folder) for folder in config['tool:pytest']['pythonpath'].split()]


#: Subprocesses find this checkout's package, the test hooks (``tests.training_hooks``) and
#: the tools' modules, as the tests do.
ENV = dict(os.environ, PYTHONPATH=os.pathsep.join(
    [str(ROOT), *_pytest_pythonpath(), *filter(None, [os.environ.get('PYTHONPATH')])]))
ENV.pop('CVT_DEBUG', None)


def run_tool(script: str, *args: object, timeout: float = 600, env: dict | None = None,
             **kwargs) -> subprocess.CompletedProcess:
    """Run ``python tools/<script> ARGS`` from the repository root; capture its output."""
    return subprocess.run([sys.executable, str(ROOT / 'tools' / script), *map(str, args)],
                          cwd=ROOT, env=env or ENV, capture_output=True, text=True,
                          timeout=timeout, **kwargs)


def load_script(script: str) -> ModuleType:
    """``tools/<script>`` as a module, to call its ``main`` in this process (its
    ``if __name__ == '__main__'`` block does not run)."""
    path = ROOT / 'tools' / script
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def call_tool(main, argv: list[str]) -> int:
    """Run a tool's ``main(argv)`` in this process as its command line would (under
    :func:`~cvt_backbone.errors.run_main`): return its exit status; an ``error:`` line goes
    to stderr."""
    from cvt_backbone.errors import run_main
    try:
        run_main(lambda: main(argv))
    except SystemExit as done:
        if isinstance(done.code, str):
            print(done.code, file=sys.stderr)
            return 1
        return done.code or 0
    return 0


def official_keys(state_dict: dict) -> OrderedDict:
    """Rename this package's CvT keys (with ``head.*``) to the official checkpoint's."""
    renamed = OrderedDict()
    for key, value in state_dict.items():
        key = key.replace('cls_norm.', 'norm.')
        if key.startswith('stages.'):
            _, index, rest = key.split('.', 2)
            key = f'stage{index}.{rest}'
        key = key.replace('.patch_embed.projection.', '.patch_embed.proj.')
        for s in 'qkv':
            key = key.replace(f'.attn.conv_proj.{s}.', f'.attn.conv_proj_{s}.')
        renamed[key] = value
    return renamed


def make_official(tmp_path: Path, seed: int = 0, arch: dict = TINY, classes: int = 10
                  ) -> tuple[CvT, OrderedDict, Path]:
    """An official-format checkpoint of a random class-token CvT with a classifier head.

    Returns:
        The CvT it came from, the official state dict and the file.
    """
    torch.manual_seed(seed)
    src = CvT(arch=arch, out_type='cls_token')
    src.init_weights()
    randomize_norms(src, seed)
    state = official_keys(src.state_dict())
    state['head.weight'] = torch.randn(classes, arch['embed_dims'][-1])
    state['head.bias'] = torch.randn(classes)
    path = tmp_path / 'official.pth'
    torch.save(state, path)
    return src, state, path


def relative_error(ours: torch.Tensor, reference: torch.Tensor) -> float:
    """Largest absolute difference over the reference's largest magnitude."""
    return ((ours - reference).abs().max() / reference.abs().max().clamp_min(1e-12)).item()


class _QuietHandler:
    """Builds a handler class that serves ``folder`` and logs nothing."""

    @staticmethod
    def for_folder(folder: Path):
        import functools
        from http.server import SimpleHTTPRequestHandler

        class Handler(SimpleHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

        return functools.partial(Handler, directory=str(folder))


@contextlib.contextmanager
def serving(server) -> Iterator[str]:
    """Run an HTTP ``server`` bound to 127.0.0.1 in a thread while in the block.

    Yields:
        Its base URL, ``http://127.0.0.1:PORT``.
    """
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f'http://127.0.0.1:{server.server_address[1]}'
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def serve(folder: Path) -> Iterator[str]:
    """Serve ``folder`` over HTTP on 127.0.0.1 (a free port) while in the block.

    Yields:
        The base URL, ``http://127.0.0.1:PORT``.
    """
    from http.server import ThreadingHTTPServer

    with serving(ThreadingHTTPServer(('127.0.0.1', 0), _QuietHandler.for_folder(folder))) as url:
        yield url


DEMO_CLS_CONFIG = ROOT / 'configs' / 'demo' / 'cvt-tiny_shapes-cls.py'


def published_weights() -> list[dict]:
    """The published weights as ``configs/cvt/metafile.yml`` lists them: ``name``, ``arch``,
    ``resolution``, ``repo`` (the hub repository), ``url`` (its ``pytorch_model.bin``),
    ``top1``, ``config``."""
    import yaml
    models = yaml.safe_load((ROOT / 'configs' / 'cvt' / 'metafile.yml').read_text())['Models']
    return [dict(name=m['Name'], arch=m['Name'].split('_')[0],
                 resolution=m['Metadata']['Resolution'], repo=m['Weights'][len('hf://'):],
                 url=f"https://huggingface.co/{m['Weights'][len('hf://'):]}/resolve/main/"
                     f'pytorch_model.bin',
                 top1=m['Results'][0]['Metrics']['Top 1 Accuracy'], config=m['Config'])
            for m in models if m.get('Weights')]


def tiny_cls_config(path: Path, data_root: Path, extra: str = '', max_epochs: int = 2,
                    batch_size: int = 8) -> Path:
    """A config inheriting the demo classifier's: tiny data, a checkpoint every epoch, no
    validation; ``extra`` (config text) overrides anything."""
    import textwrap
    path.write_text(textwrap.dedent(f"""
        _base_ = {str(DEMO_CLS_CONFIG)!r}
        custom_imports = dict(imports=['cvt_backbone', 'cvt_backbone.training',
                                       'tests.training_hooks'], allow_failed_imports=False)
        train_dataloader = dict(batch_size={batch_size}, num_workers=1, persistent_workers=False,
                                dataset=dict(dataset=dict(data_root={str(data_root)!r})))
        val_dataloader = dict(num_workers=0, persistent_workers=False,
                              dataset=dict(data_root={str(data_root)!r}))
        test_dataloader = val_dataloader
        train_cfg = dict(max_epochs={max_epochs}, val_interval=100)
        default_hooks = dict(
            checkpoint=dict(interval=1, max_keep_ckpts=-1, save_best=None),
            logger=dict(interval=1))
        randomness = dict(seed=0, deterministic=True)
    """) + textwrap.dedent(extra))
    return path


def train(config: Path, work_dir: Path, *args: object, check: bool = True,
          timeout: float = 600) -> subprocess.CompletedProcess:
    """``tools/train.py CONFIG --work-dir WORK_DIR ARGS``; by default it must succeed."""
    result = run_tool('train.py', config, '--work-dir', work_dir, *args, timeout=timeout)
    if check:
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def train_until(config: Path, work_dir: Path, stop: str | tuple[str, ...], *args: object,
                env: dict | None = None, timeout: float = 600,
                command: list[str] | None = None) -> list[str]:
    """Start ``tools/train.py`` (or ``command``) and SIGKILL its process group when lines
    containing ``stop`` (a tuple: each of its strings, in this order) appear on its stdout.

    Returns:
        The stdout lines read up to that one.
    """
    pending = list((stop, ) if isinstance(stop, str) else stop)
    import signal
    import time
    command = command or [sys.executable, str(ROOT / 'tools' / 'train.py'), str(config),
                          '--work-dir', str(work_dir), *map(str, args)]
    lines = []
    with subprocess.Popen(command, cwd=ROOT, env=env or ENV, stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, text=True, start_new_session=True) as proc:
        deadline = time.monotonic() + timeout
        try:
            for line in proc.stdout:
                lines.append(line.rstrip('\n'))
                if pending[0] in line:
                    pending.pop(0)
                    if not pending:
                        os.killpg(proc.pid, signal.SIGKILL)
                        break
                assert time.monotonic() < deadline, f'no {stop!r} within {timeout} s'
            else:
                raise AssertionError(f'training ended before {stop!r}: ' + '\n'.join(lines[-20:]))
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    return lines


# ----------------------------------------------------------------------------- a local hub
def hub_files(model: CvT, head: tuple[torch.Tensor, torch.Tensor] | None = None
              ) -> dict[str, bytes]:
    """A hub repository of ``model`` as transformers stores it: ``config.json`` (model type
    ``cvt``) and ``model.safetensors`` with ``CvtModel``'s keys, or with
    ``CvtForImageClassification``'s when ``head`` (a linear classifier's weight and bias)
    is given."""
    import json

    from safetensors.torch import save
    from transformers import CvtForImageClassification, CvtModel

    from cvt_backbone.checkpoint import to_transformers_state_dict
    from transformers_port import transformers_config

    state = dict(model.state_dict())
    num_labels = 0
    if head is not None:
        state.update({'head.weight': head[0], 'head.bias': head[1]})
        num_labels = head[0].shape[0]
    config = transformers_config(model.arch, num_labels, kv_strides=model.kv_strides,
                                 in_channels=model.in_channels)
    keys = (CvtForImageClassification(config) if head is not None
            else CvtModel(config, add_pooling_layer=False)).state_dict().keys()
    weights = to_transformers_state_dict(state, keys)
    return {'config.json': json.dumps(config.to_dict()).encode(),
            'model.safetensors': save({k: v.contiguous() for k, v in weights.items()})}


@contextlib.contextmanager
def local_hub(repos: dict[str, dict[str, bytes]]) -> Iterator[str]:
    """Serve ``repos`` (``'owner/name'`` or ``'owner/name@revision'`` -> file name -> bytes;
    no revision is ``main``) as the hub's file endpoints on 127.0.0.1 while in the block.

    It answers what ``hf_hub_download`` asks of ``/{repo}/resolve/{revision}/{file}``: the
    commit, ETag and size in the headers, the bytes, and the hub's ``X-Error-Code`` for what
    does not exist.

    Yields:
        The endpoint, ``http://127.0.0.1:PORT`` (for ``HF_ENDPOINT``).
    """
    import hashlib
    import re
    import urllib.parse
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def answer(self, status: int, headers: dict, body: bytes = b'') -> None:
            self.send_response(status)
            for name, value in {**headers, 'Content-Length': str(len(body))}.items():
                self.send_header(name, value)
            self.end_headers()
            if self.command == 'GET':
                self.wfile.write(body)

        def do_HEAD(self) -> None:
            match = re.match(r'^/([^/]+/[^/]+)/resolve/([^/]+)/([^?]+)', self.path)
            if match is None:
                return self.answer(404, {})
            repo, revision, name = map(urllib.parse.unquote, match.groups())
            key = repo if revision == 'main' else f'{repo}@{revision}'
            if not any(r.split('@')[0] == repo for r in repos):
                return self.answer(401, {'X-Error-Code': 'RepoNotFound'})
            if key not in repos:
                return self.answer(404, {'X-Error-Code': 'RevisionNotFound'})
            commit = hashlib.sha1(key.encode()).hexdigest()
            if name not in repos[key]:
                return self.answer(404, {'X-Error-Code': 'EntryNotFound',
                                         'X-Repo-Commit': commit})
            data = repos[key][name]
            self.answer(200, {'X-Repo-Commit': commit, 'Content-Type': 'application/octet-stream',
                              'ETag': f'"{hashlib.sha256(data).hexdigest()}"'}, data)

        do_GET = do_HEAD

    with serving(ThreadingHTTPServer(('127.0.0.1', 0), Handler)) as url:
        yield url


def hub_env(endpoint: str, folder: Path) -> dict:
    """:data:`ENV` for a child process whose huggingface_hub asks ``endpoint`` and caches in
    ``folder`` (huggingface_hub reads these when it is imported)."""
    env = {k: v for k, v in ENV.items() if not k.startswith(('HF_', 'HUGGING'))}
    env.update(HF_ENDPOINT=endpoint, HF_HOME=str(folder / 'hf'),
               HF_HUB_CACHE=str(folder / 'hf' / 'hub'), HF_HUB_DISABLE_PROGRESS_BARS='1',
               HF_HUB_DISABLE_TELEMETRY='1', HF_HUB_ETAG_TIMEOUT='10',
               HF_HUB_DOWNLOAD_TIMEOUT='10')
    return env
