"""Downloads that fail, whatever the server does: one named error, no file left behind.

Each server here is a raw socket on 127.0.0.1 that misbehaves in one way: it never answers,
never stops sending, announces more than allowed, sends no HTTP status line, breaks a chunked
body, closes early, or has no such file.
"""
from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import torch

from cvt_backbone import CheckpointError, CvT, load_cvt_weights, read_checkpoint
from cvt_backbone.checkpoint import read
from tests.helpers import ENV, TINY, run_tool

#: A cap far below the endless server's stream, so that the test ends at once.
CAP = 1 << 20


@contextlib.contextmanager
def raw_server(answer: Callable[[socket.socket, threading.Event], None]) -> Iterator[str]:
    """Serve on 127.0.0.1: read each request's head, then let ``answer`` write to the socket.

    Yields:
        A URL of the server.
    """
    listener = socket.create_server(('127.0.0.1', 0))
    listener.settimeout(0.1)
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            with connection, contextlib.suppress(OSError):
                connection.settimeout(10)
                head = b''
                while b'\r\n\r\n' not in head:
                    head += connection.recv(4096) or b'\r\n\r\n'
                answer(connection, stop)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield f'http://127.0.0.1:{listener.getsockname()[1]}/weights.pth'
    finally:
        stop.set()
        thread.join(10)
        listener.close()


def silent(connection, stop) -> None:
    stop.wait()


def endless(connection, stop) -> None:
    connection.sendall(b'HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n')
    while not stop.is_set():
        connection.sendall(b'\0' * 65536)


def announces_too_much(connection, stop) -> None:
    connection.sendall(b'HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n' % (CAP + 1))


def bad_status_line(connection, stop) -> None:
    connection.sendall(b'SPAM SPAM SPAM\r\n\r\n')


def broken_chunks(connection, stop) -> None:
    connection.sendall(b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n400\r\n'
                       + b'x' * 10)


def closes_early(connection, stop) -> None:
    connection.sendall(b'HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n' + b'x' * 10)


def not_found(connection, stop) -> None:
    connection.sendall(b'HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n')


FAILURES = {
    silent: r'no answer within 0.5 s \(set CVT_DOWNLOAD_TIMEOUT to wait longer\)',
    endless: rf'Stopped downloading checkpoint .*: it sent more than the {CAP} bytes allowed',
    announces_too_much: rf'it announces {CAP + 1} bytes, more than the {CAP} allowed',
    bad_status_line: 'the server sent no valid HTTP status line',
    broken_chunks: 'the connection closed before the whole file arrived',
    closes_early: 'the connection closed after 10 of 1000 bytes',
    not_found: 'HTTP 404 Not Found',
}


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A torch hub folder of the test's own, small download limits; the cache folder."""
    torch.hub.set_dir(str(tmp_path / 'hub'))
    monkeypatch.setenv('CVT_DOWNLOAD_TIMEOUT', '0.5')
    monkeypatch.setenv('CVT_DOWNLOAD_MAX_BYTES', str(CAP))
    yield tmp_path / 'hub' / 'checkpoints' / 'cvt_backbone'
    monkeypatch.setattr(torch.hub, '_hub_dir', None)


@pytest.mark.parametrize('answer', FAILURES, ids=lambda a: a.__name__)
def test_a_failed_download_is_one_named_error_and_leaves_no_file(cache, answer):
    with raw_server(answer) as url:
        with pytest.raises(CheckpointError, match=FAILURES[answer]) as error:
            read_checkpoint(url)
    assert str(error.value).count('\n') == 0 and url in str(error.value)
    assert list(cache.iterdir()) == []


def test_cvt_loaders_stop_at_the_cap(cache):
    with raw_server(endless) as url:
        with pytest.raises(CheckpointError, match='sent more than the'):
            CvT(arch=TINY, init_cfg=dict(type='Pretrained', checkpoint=url)).init_weights()
        with pytest.raises(CheckpointError, match='sent more than the'):
            load_cvt_weights(CvT(arch=TINY), url)
    assert list(cache.iterdir()) == []


def test_stale_partial_files_are_removed_live_ones_kept(cache):
    cache.mkdir(parents=True)
    name = os.path.basename(read.cache_path('http://h/x.pth'))
    stale, live = cache / f'{name}.0123456789ab.partial', cache / f'{name}.ba9876543210.partial'
    unrelated = cache / 'notes.partial'
    for path in (stale, live, unrelated):
        path.write_bytes(b'x')
    hours_ago = time.time() - 2 * 3600
    for path in (stale, unrelated):
        os.utime(path, (hours_ago, hours_ago))
    with raw_server(not_found) as url, pytest.raises(CheckpointError, match='HTTP 404'):
        read_checkpoint(url)
    assert sorted(p.name for p in cache.iterdir()) == sorted([live.name, unrelated.name])


@pytest.mark.parametrize('name, value', [('CVT_DOWNLOAD_TIMEOUT', 'soon'),
                                         ('CVT_DOWNLOAD_MAX_BYTES', '-1')])
def test_bad_limits_are_named(cache, monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(CheckpointError, match=f"{name}='{value}' is not a positive"):
        read_checkpoint('http://127.0.0.1:9/x.pth')


@pytest.mark.slow
def test_the_test_tool_stops_an_endless_download_with_one_line(tmp_path, shapes_cls):
    env = dict(ENV, TORCH_HOME=str(tmp_path / 'torch'), CVT_DOWNLOAD_MAX_BYTES=str(CAP))
    data = [f'{loader}.dataset.data_root={shapes_cls}'
            for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')]
    with raw_server(endless) as url:
        result = run_tool('test.py', 'configs/demo/cvt-tiny_shapes-cls.py', url, '--work-dir',
                          tmp_path / 'work', '--cfg-options', *data, env=env, timeout=300)
    assert result.returncode == 1, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f'error: Stopped downloading checkpoint {url}'), last
    assert 'Traceback' not in result.stderr
    cached = tmp_path / 'torch' / 'hub' / 'checkpoints' / 'cvt_backbone'
    assert not cached.exists() or list(cached.iterdir()) == []
