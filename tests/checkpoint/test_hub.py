"""Hub repository ids (``'owner/name[@revision]'``) as checkpoints, against a local hub.

The hub here is a server on 127.0.0.1 that answers what ``hf_hub_download`` asks of
``/{repo_id}/resolve/{revision}/{filename}``: HEAD with ``X-Repo-Commit``, ``ETag`` and
``Content-Length``, GET with the bytes, and the hub's ``X-Error-Code`` for a repository,
revision or file that does not exist; it breaks off the weights of ``broken/*`` half-way.
huggingface_hub reads ``HF_ENDPOINT``, ``HF_HOME`` and
``HF_HUB_OFFLINE`` when it is imported, so each read runs in a child process with its own
environment (:func:`read_in_child`), its cache in the test's folder.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from cvt_backbone import CheckpointError, CvT, read_checkpoint
from cvt_backbone.checkpoint.convert import to_cvt_keys
from cvt_backbone.checkpoint.read import is_hub_id, parse_hub_id
from tests.checkpoint import crafted
from tests.helpers import ENV, PORTABLE, port_of, randomize_norms, serving

pytest.importorskip('huggingface_hub')
pytest.importorskip('transformers')  # CvtModel gives the transformers keys and config.json

#: Repository -> revision -> (commit, {file name: bytes}).
Repos = dict[str, dict[str, tuple[str, dict[str, bytes]]]]


# ----------------------------------------------------------------------------- the hub
@contextlib.contextmanager
def local_hub(repos: Repos) -> Iterator[str]:
    """Serve ``repos`` as the hub's file endpoints on 127.0.0.1 while in the block.

    Yields:
        The endpoint, ``http://127.0.0.1:PORT`` (for ``HF_ENDPOINT``).
    """
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def answer(self, status: int, headers: dict, body: bytes = b'', cut: bool = False
                   ) -> None:
            self.send_response(status)
            for name, value in {**headers, 'Content-Length': str(len(body))}.items():
                self.send_header(name, value)
            self.end_headers()
            if self.command == 'GET':
                self.wfile.write(body[:len(body) // 2] if cut else body)

        def do_HEAD(self) -> None:
            match = re.match(r'^/([^/]+/[^/]+)/resolve/([^/]+)/([^?]+)', self.path)
            if match is None:
                return self.answer(404, {})
            repo, revision, name = map(urllib.parse.unquote, match.groups())
            if repo not in repos:
                return self.answer(401, {'X-Error-Code': 'RepoNotFound',
                                         'X-Error-Message': 'Repository not found'})
            if revision not in repos[repo]:
                return self.answer(404, {'X-Error-Code': 'RevisionNotFound',
                                         'X-Error-Message': 'Invalid rev id'})
            commit, files = repos[repo][revision]
            if name not in files:
                return self.answer(404, {'X-Error-Code': 'EntryNotFound',
                                         'X-Error-Message': 'Entry not found',
                                         'X-Repo-Commit': commit})
            data = files[name]
            self.answer(200, {'X-Repo-Commit': commit, 'Content-Type': 'application/octet-stream',
                              'ETag': f'"{hashlib.sha256(data).hexdigest()}"'}, data,
                        cut=repo.startswith('broken/') and name != 'config.json')

        do_GET = do_HEAD

    with serving(ThreadingHTTPServer(('127.0.0.1', 0), Handler)) as url:
        yield url


def commit_of(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


# ----------------------------------------------------------------------------- reading in a child
CHILD = """
import json, sys
if sys.argv[1] == 'no-hub':
    sys.modules['huggingface_hub'] = None  # as if it were not installed
from safetensors.torch import save_file
from cvt_backbone import CvT, read_checkpoint
from tests.helpers import PORTABLE
for job in json.loads(sys.argv[2]):
    try:
        if job.get('load'):
            model = CvT(arch=PORTABLE, init_cfg=dict(type='Pretrained', checkpoint=job['source']))
            model.init_weights()
            state_dict, meta = model.state_dict(), {}
        else:
            checkpoint = read_checkpoint(job['source'])
            state_dict, meta = checkpoint['state_dict'], checkpoint['meta']
        save_file({k: v.contiguous() for k, v in state_dict.items()}, job['out'])
        print(json.dumps({'source': meta.get('source'),
                          'config': meta.get('transformers_config')}), flush=True)
    except Exception as err:
        print(json.dumps({'error': str(err), 'type': type(err).__name__}), flush=True)
"""


def read_in_child(tmp_path: Path, endpoint: str, sources: list[str | dict],
                  offline: bool = False, hub: bool = True) -> list[dict]:
    """Read each source in one child process whose huggingface_hub uses ``endpoint`` and a
    cache in ``tmp_path``; each result is ``{'source', 'config', 'state_dict'}`` or
    ``{'error', 'type'}``."""
    jobs = [dict(source, out=str(tmp_path / f'out{i}.safetensors')) if isinstance(source, dict)
            else dict(source=source, out=str(tmp_path / f'out{i}.safetensors'))
            for i, source in enumerate(sources)]
    env = {k: v for k, v in ENV.items() if not k.startswith(('HF_', 'HUGGING'))}
    env.update(HF_ENDPOINT=endpoint, HF_HOME=str(tmp_path / 'hf'),
               HF_HUB_CACHE=str(tmp_path / 'hf' / 'hub'), HF_HUB_DISABLE_PROGRESS_BARS='1',
               HF_HUB_DISABLE_TELEMETRY='1', HF_HUB_ETAG_TIMEOUT='5',
               HF_HUB_DOWNLOAD_TIMEOUT='5', **({'HF_HUB_OFFLINE': '1'} if offline else {}))
    result = subprocess.run([sys.executable, '-c', CHILD, 'hub' if hub else 'no-hub',
                             json.dumps(jobs)], env=env, cwd=tmp_path, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    answers = [json.loads(line) for line in result.stdout.splitlines() if line.startswith('{')]
    assert len(answers) == len(jobs), result.stdout + result.stderr[-3000:]
    for answer, job in zip(answers, jobs):
        if 'error' not in answer:
            from safetensors.torch import load_file
            answer['state_dict'] = load_file(job['out'])
    return answers


# ----------------------------------------------------------------------------- repositories
def tiny_cvt(seed: int) -> tuple[dict[str, torch.Tensor], dict]:
    """A random CvT's weights under transformers' names, and its ``config.json``."""
    torch.manual_seed(seed)
    model = CvT(arch=PORTABLE)
    model.init_weights()
    randomize_norms(model, seed)
    port = port_of(model)
    return {k: v.clone().contiguous() for k, v in port.state_dict().items()}, port.config.to_dict()


def safetensors_bytes(state_dict: dict) -> bytes:
    from safetensors.torch import save
    return save(state_dict)


def torch_bytes(state_dict: dict) -> bytes:
    import io
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    return buffer.getvalue()


@pytest.fixture(scope='module')
def repos(tmp_path_factory) -> tuple[Repos, dict]:
    """The repositories, and what each should read as."""
    folder = tmp_path_factory.mktemp('crafted')
    main, config = tiny_cvt(0)
    v1, _ = tiny_cvt(1)
    bin_only, _ = tiny_cvt(2)
    config_bytes = json.dumps(config).encode()
    repos = {
        'tiny/cvt': {
            'main': (commit_of('main'), {'config.json': config_bytes,
                                         'model.safetensors': safetensors_bytes(main)}),
            'v1': (commit_of('v1'), {'config.json': config_bytes,
                                     'model.safetensors': safetensors_bytes(v1)}),
        },
        'tiny/cvt-bin': {'main': (commit_of('bin'), {'config.json': config_bytes,
                                                     'pytorch_model.bin': torch_bytes(bin_only)})},
        'tiny/no-weights': {'main': (commit_of('none'), {'config.json': config_bytes})},
        'tiny/not-cvt': {'main': (commit_of('bert'), {
            'config.json': json.dumps({'model_type': 'bert'}).encode(),
            'model.safetensors': safetensors_bytes(main)})},
        'broken/cvt': {'main': (commit_of('broken'), {
            'config.json': config_bytes, 'model.safetensors': safetensors_bytes(main)})},
        'evil/cvt': {'main': (commit_of('evil'), {
            'config.json': config_bytes,
            'pytorch_model.bin': crafted.os_system(folder).read_bytes()})},
    }
    expected = dict(main=main, v1=v1, bin_only=bin_only, config=json.loads(config_bytes),
                    marker=folder / crafted.MARKER)
    return repos, expected


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ----------------------------------------------------------------------------- the tests
def test_hub_ids_are_read_as_save_pretrained_folders_then_from_the_cache(tmp_path, repos):
    repos, expected = repos
    sources = ['tiny/cvt', 'hf://tiny/cvt-bin', 'tiny/cvt@v1', 'hf://tiny/cvt@main',
               {'source': 'tiny/cvt', 'load': True}]
    with local_hub(repos) as endpoint:
        online = read_in_child(tmp_path, endpoint, sources)
    assert [same(r['state_dict'], expected[name]) for r, name in
            zip(online, ['main', 'bin_only', 'v1', 'main'])] == [True] * 4, online
    cache = tmp_path / 'hf' / 'hub'
    assert online[0]['source'] == str(cache / 'models--tiny--cvt' / 'snapshots' /
                                      commit_of('main') / 'model.safetensors')
    assert online[1]['source'].endswith(f'{commit_of("bin")}/pytorch_model.bin')
    assert online[2]['source'].endswith(f'{commit_of("v1")}/model.safetensors')
    assert all(r['config'] == expected['config'] for r in online[:4])
    # Through init_cfg: the weights the port was made from, in this package's names.
    loaded, ours = online[4]['state_dict'], to_cvt_keys(expected['main'])[0]
    assert ours.keys() <= loaded.keys() and all(torch.equal(loaded[k], ours[k]) for k in ours)

    # The server is gone and HF_HUB_OFFLINE set: what was fetched comes from the cache.
    offline = read_in_child(tmp_path, endpoint, sources[:3] + ['tiny/never-fetched'],
                            offline=True)
    for cached, fetched in zip(offline[:3], online):
        assert same(cached.pop('state_dict'), fetched.pop('state_dict'))
        assert cached == fetched  # the same file, the same config.json
    assert offline[3] == {'type': 'CheckpointError', 'error': (
        f"Could not read hub repository 'tiny/never-fetched': config.json is not in the cache "
        f"({cache}) and {endpoint} cannot be reached (HF_HUB_OFFLINE is set)")}


def test_each_failure_is_one_line_naming_the_id(tmp_path, repos):
    repos, expected = repos
    failures = {
        'nobody/nothing': r"Could not read hub repository 'nobody/nothing': no local file or "
                          r"folder has that name, and http://127.0.0.1:\d+ has no repository "
                          r"'nobody/nothing' \(a private one needs a login",
        'tiny/cvt@v9': r"Could not read hub repository 'tiny/cvt@v9': the repository has no "
                       r"revision 'v9'",
        'tiny/no-weights': r"Hub repository 'tiny/no-weights' has no model.safetensors and no "
                           r"pytorch_model.bin$",
        'tiny/not-cvt': r"Hub repository 'tiny/not-cvt': .*config.json' describes a "
                        r"transformers model of type 'bert', not a CvT",
        'evil/cvt': r"Hub repository 'evil/cvt': .*posix.system",
        'broken/cvt': r"Could not read hub repository 'broken/cvt': the download failed "
                      r"\(\w+Error: ",  # requests' or httpx's, as huggingface_hub uses one
        'hf://tiny/cvt/extra': r"'hf://tiny/cvt/extra' is not a hub repository id",
        'hf://bad..name/x': r"Could not read hub repository 'hf://bad..name/x': 'bad..name/x' "
                            r"is not a valid repository id",
    }
    with local_hub(repos) as endpoint:
        answers = read_in_child(tmp_path, endpoint, list(failures))
    for (source, pattern), answer in zip(failures.items(), answers):
        assert answer.get('type') == 'CheckpointError', (source, answer)
        assert re.match(pattern, answer['error']) and '\n' not in answer['error'], answer
    assert not expected['marker'].exists()


def test_without_huggingface_hub_the_extra_is_named(tmp_path):
    answers = read_in_child(tmp_path, 'http://127.0.0.1:9',
                            ['microsoft/cvt-13', 'work_dirs/epoch_1.pth'], hub=False)
    assert answers[0] == {
        'type': 'CheckpointError',
        'error': "Checkpoint 'microsoft/cvt-13' is no local file or folder, so it is read as a "
                 "hub repository id, which needs huggingface_hub: pip install "
                 "\"cvt-backbone[hub]\" (or pip install huggingface_hub)"}
    assert answers[1]['type'] == 'FileNotFoundError'  # a file name, not looked up


def test_what_is_a_hub_id(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for source in ('microsoft/cvt-13', 'microsoft/cvt-13@main', 'microsoft/cvt-13@refs/pr/1',
                   'hf://microsoft/cvt-13', 'hf://anything/at/all', 'org.x/model_1-v2'):
        assert is_hub_id(source), source
    for source in ('cvt-13', '/abs/cvt-13', './microsoft/cvt-13', '~/x/y', 'a/b/c',
                   'work_dirs/epoch_12.pth', 'x/model.safetensors', 'x/y@main.bin',
                   'microsoft/cvt-13@', 'http://h/x/y'):
        assert not is_hub_id(source), source
    assert parse_hub_id('microsoft/cvt-13') == ('microsoft/cvt-13', None)
    assert parse_hub_id('hf://microsoft/cvt-13@refs/pr/1') == ('microsoft/cvt-13', 'refs/pr/1')
    with pytest.raises(CheckpointError, match="'hf://x' is not a hub repository id"):
        parse_hub_id('hf://x')
    # A local folder of that name wins, without asking any hub.
    os.makedirs('microsoft/cvt-13')
    assert not is_hub_id('microsoft/cvt-13')
    with pytest.raises(CheckpointError, match="folder 'microsoft/cvt-13' holds no weights"):
        read_checkpoint('microsoft/cvt-13')
