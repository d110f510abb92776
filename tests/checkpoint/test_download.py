"""Downloads that fail, whatever the server does: one named error, no file left behind.

Each server here is a raw socket on 127.0.0.1 that misbehaves in one way: it never answers,
stalls, trickles, never stops sending, announces more than allowed, sends no HTTP status
line, breaks a chunked body, closes early, redirects elsewhere than http(s) or in a loop, or
has no such file. A download in a child process killed with SIGTERM leaves no file either.
"""
from __future__ import annotations

import contextlib
import io
import itertools
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import torch

from cvt_backbone import CheckpointError, CvT, load_cvt_weights, read_checkpoint
from cvt_backbone.checkpoint import download
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


def stalls(connection, stop) -> None:
    connection.sendall(b'HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n' + b'x' * 10)
    stop.wait()


def trickles(connection, stop) -> None:
    """One byte every 0.2 s: each read gets a byte well within the timeout."""
    connection.sendall(b'HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n')
    while not stop.wait(0.2):
        connection.sendall(b'x')


def trickles_headers(connection, stop) -> None:
    """A header line that grows by one byte every 0.2 s and never ends."""
    connection.sendall(b'HTTP/1.1 200 OK\r\nX-Slow: ')
    while not stop.wait(0.2):
        connection.sendall(b'x')


def trickles_chunk_sizes(connection, stop) -> None:
    """A chunked body whose first chunk-size line grows by one byte every 0.2 s."""
    connection.sendall(b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1;')
    while not stop.wait(0.2):
        connection.sendall(b'x')


def trickles_trailers(connection, stop) -> None:
    """A one-byte chunked body, then trailer lines, one byte every 0.2 s, without end."""
    connection.sendall(b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nA\r\n0\r\n')
    for byte in itertools.cycle(b'X-T: 1\r\n'):
        if stop.wait(0.2):
            break
        connection.sendall(bytes([byte]))


def redirects_to(location: bytes, name: str) -> Callable[[socket.socket, threading.Event], None]:
    def answer(connection, stop) -> None:
        connection.sendall(b'HTTP/1.1 302 Found\r\nLocation: %s\r\nContent-Length: 0\r\n'
                           b'\r\n' % location)

    answer.__name__ = name
    return answer


redirects_to_file = redirects_to(b'file:///etc/passwd', 'redirects_to_file')
redirects_to_ftp = redirects_to(b'ftp://127.0.0.1/weights.pth', 'redirects_to_ftp')
redirects_in_a_loop = redirects_to(b'/weights.pth', 'redirects_in_a_loop')


FAILURES = {
    silent: r'no answer within 0.5 s \(set CVT_DOWNLOAD_TIMEOUT to wait longer\)',
    stalls: r'Could not download checkpoint .*: no answer within 0.5 s',
    redirects_to_file: r"Refused to download checkpoint .*: it redirects to 'file:///etc/passwd',"
                       r' which is not an http\(s\) URL',
    redirects_to_ftp: r"it redirects to 'ftp://127.0.0.1/weights.pth', which is not an http\(s\)",
    redirects_in_a_loop: r'Refused to download checkpoint .*: it redirects more than 5 times',
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
    name = os.path.basename(download.cache_path('http://h/x.pth'))
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


@pytest.mark.parametrize('answer, limits, error', [
    (trickles, {'CVT_DOWNLOAD_MIN_RATE': '100'},
     r'Stopped downloading checkpoint .*: \d+ bytes arrived in \d\.\d s, slower than the 100 '
     r'bytes/s required \(set CVT_DOWNLOAD_MIN_RATE to accept slower\)$'),
    (trickles, {'CVT_DOWNLOAD_MIN_RATE': '1', 'CVT_DOWNLOAD_DEADLINE': '1.5'},
     r'Stopped downloading checkpoint .*: it took more than 1.5 s in all \(set '
     r'CVT_DOWNLOAD_DEADLINE to allow longer\)$'),
    (trickles_headers, {'CVT_DOWNLOAD_TIMEOUT': '1', 'CVT_DOWNLOAD_DEADLINE': '1.5'},
     'it took more than 1.5 s in all'),
    (trickles_headers, {}, r'0 bytes arrived in \d\.\d s, slower than the 32768 bytes/s'),
    (trickles_chunk_sizes, {}, r'0 bytes arrived in \d\.\d s, slower than the 32768 bytes/s'),
    (trickles_trailers, {}, r'1 bytes arrived in \d\.\d s, slower than the 32768 bytes/s'),
], ids=['min_rate', 'deadline', 'deadline_in_headers', 'min_rate_in_headers',
        'min_rate_in_chunk_sizes', 'min_rate_in_trailers'])
def test_a_trickle_is_stopped_by_the_rate_or_the_deadline(cache, monkeypatch, answer, limits,
                                                          error):
    """A byte every 0.2 s passes every read timeout (0.5 s here), not the rate over each 1 s
    (twice the timeout) nor the whole download's deadline, wherever it trickles: the body,
    the headers, a chunk-size line or the trailers."""
    for name, value in limits.items():
        monkeypatch.setenv(name, value)
    start = time.monotonic()
    with raw_server(answer) as url, pytest.raises(CheckpointError, match=error) as caught:
        download.download(url, progress=False)
    assert 0.9 < time.monotonic() - start < 5
    assert '\n' not in str(caught.value) and list(cache.iterdir()) == []


def test_http_redirects_are_followed(cache):
    payload = io.BytesIO()
    torch.save({'w': torch.ones(2)}, payload)
    answers = iter([redirects_to(b'/elsewhere/weights.pth', 'once'), lambda connection, stop:
                    connection.sendall(b'HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s' % (
                        len(payload.getvalue()), payload.getvalue()))])
    with raw_server(lambda connection, stop: next(answers)(connection, stop)) as url:
        assert torch.equal(read_checkpoint(url)['w'], torch.ones(2))


@pytest.mark.parametrize('url, problem', [
    ('http://[::1/x.pth', 'Invalid IPv6 URL'),
    ('http://127.0.0.1:99999/x.pth', 'Port out of range'),
    ('http:///x.pth', 'it names no host'),
    ('http://127.0.0.1/a b.pth', 'spaces or control characters'),
    ('http://127.0.0.1/x.pth\nHost: elsewhere', 'spaces or control characters'),
])
def test_a_malformed_url_is_one_named_error(cache, url, problem):
    with pytest.raises(CheckpointError, match='malformed URL') as caught:
        read_checkpoint(url)
    message = str(caught.value)
    assert problem in message and repr(url) in message and '\n' not in message


def test_the_sigterm_disposition_is_restored_and_threads_download_too(cache):
    before = signal.getsignal(signal.SIGTERM)
    with raw_server(not_found) as url:
        with pytest.raises(CheckpointError, match='HTTP 404'):
            download.download(url, progress=False)
        assert signal.getsignal(signal.SIGTERM) is before
        failures = []
        thread = threading.Thread(target=lambda: failures.append(
            pytest.raises(CheckpointError, download.download, url, progress=False)))
        thread.start()
        thread.join(10)
    assert len(failures) == 1 and 'HTTP 404' in str(failures[0].value)
    assert signal.getsignal(signal.SIGTERM) is before


DOWNLOAD_IN_A_CHILD = """
import signal, sys, torch
torch.hub.set_dir(sys.argv[2])
if sys.argv[3] == 'handled':
    def handler(signum, frame):
        print('previous handler ran', flush=True)
        sys.exit(3)
    signal.signal(signal.SIGTERM, handler)
from cvt_backbone.checkpoint.download import download
download(sys.argv[1], progress=False)
"""


@pytest.mark.parametrize('previous', ['default', 'handled'])
def test_sigterm_mid_download_leaves_no_partial_file(tmp_path, previous):
    """SIGTERM reaches the disposition the child had (the default one ends it by the signal;
    a handler of its own runs), and the partial file is gone either way."""
    hub = tmp_path / 'hub'
    folder = hub / 'checkpoints' / 'cvt_backbone'
    env = dict(ENV, CVT_DOWNLOAD_TIMEOUT='60')
    with raw_server(stalls) as url:
        child = subprocess.Popen([sys.executable, '-c', DOWNLOAD_IN_A_CHILD, url, str(hub),
                                  previous], env=env, stdout=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 120
            while not any(p.name.endswith('.partial')
                          for p in (folder.iterdir() if folder.exists() else ())):
                assert child.poll() is None and time.monotonic() < deadline, 'no partial file'
                time.sleep(0.05)
            child.send_signal(signal.SIGTERM)
            output, _ = child.communicate(timeout=30)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
    if previous == 'default':
        assert child.returncode == -signal.SIGTERM
    else:
        assert child.returncode == 3 and output == 'previous handler ran\n'
    assert list(folder.iterdir()) == []


@pytest.mark.parametrize('name, value', [('CVT_DOWNLOAD_TIMEOUT', 'soon'),
                                         ('CVT_DOWNLOAD_MAX_BYTES', '-1'),
                                         ('CVT_DOWNLOAD_DEADLINE', '0'),
                                         ('CVT_DOWNLOAD_MIN_RATE', 'fast')])
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
