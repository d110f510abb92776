"""Downloading checkpoints from ``http(s)://`` URLs into a cache, within stated limits.

The cache, the four limits and their environment variables, redirects and the removal of
partial files are described in docs/downloads.md. Every failure is one
:class:`CheckpointError` line.
"""
from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import os.path as osp
import re
import signal
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator

import torch
from torch.hub import tqdm  # tqdm where it is installed, else torch's own minimal bar

from ..errors import CheckpointError

# Each download limit: (environment variable, default); docs/downloads.md says why.
#: Seconds the connection and every read wait at most.
TIMEOUT_ENV, DEFAULT_TIMEOUT = 'CVT_DOWNLOAD_TIMEOUT', 30.0
#: Seconds the whole download may take, headers included.
DEADLINE_ENV, DEFAULT_DEADLINE = 'CVT_DOWNLOAD_DEADLINE', 3 * 3600.0
#: The slowest body rate accepted (bytes/s), over each span of twice the timeout.
MIN_RATE_ENV, DEFAULT_MIN_RATE = 'CVT_DOWNLOAD_MIN_RATE', 32 << 10
#: Bytes accepted at most, announced or received.
MAX_BYTES_ENV, DEFAULT_MAX_BYTES = 'CVT_DOWNLOAD_MAX_BYTES', 2 << 30
#: Redirects followed; hub files take one or two (a renamed repository, then the CDN).
MAX_REDIRECTS = 5
#: A ``.partial`` file untouched this long belongs to no live download.
STALE_PARTIAL_SECONDS = 3600
_PARTIAL = re.compile(r'^[0-9a-f]{16}-[A-Za-z0-9._-]+\.[0-9a-f]{12}\.partial$')
_CHUNK = 1 << 20


def url_cache_dir() -> str:
    """Where downloaded checkpoints are kept: ``<torch hub dir>/checkpoints/cvt_backbone``."""
    return osp.join(torch.hub.get_dir(), 'checkpoints', 'cvt_backbone')


def cache_path(url: str) -> str:
    """The cache file of ``url``: a hash of the whole URL, then its file name in safe
    characters (so no part of the URL can name a folder)."""
    name = osp.basename(urllib.parse.urlparse(url).path) or 'checkpoint'
    name = re.sub(r'[^A-Za-z0-9._-]', '_', name).lstrip('.')[-80:] or 'checkpoint'
    digest = hashlib.sha256(url.encode('utf-8')).hexdigest()[:16]
    return osp.join(url_cache_dir(), f'{digest}-{name}')


def _env_limit(name: str, default: float, kind: type) -> float:
    value = os.environ.get(name)
    if value is None or not value.strip():
        return default
    try:
        number = kind(value)
    except ValueError:
        number = 0
    if not number > 0:
        raise CheckpointError(f'{name}={value!r} is not a positive {kind.__name__}')
    return number


def download_limits() -> tuple[float, float, float, int]:
    """The limits of :func:`download`, from the environment or their defaults.

    Returns:
        The read timeout (s, ``CVT_DOWNLOAD_TIMEOUT``), the deadline (s,
        ``CVT_DOWNLOAD_DEADLINE``), the minimum rate (bytes/s, ``CVT_DOWNLOAD_MIN_RATE``) and
        the size cap (bytes, ``CVT_DOWNLOAD_MAX_BYTES``).

    Raises:
        CheckpointError: a variable is set to something other than a positive number.
    """
    return (_env_limit(TIMEOUT_ENV, DEFAULT_TIMEOUT, float),
            _env_limit(DEADLINE_ENV, DEFAULT_DEADLINE, float),
            _env_limit(MIN_RATE_ENV, DEFAULT_MIN_RATE, float),
            int(_env_limit(MAX_BYTES_ENV, DEFAULT_MAX_BYTES, int)))


def remove_stale_partials(folder: str, timeout: float) -> None:
    """Remove the ``.partial`` files of downloads that died (killed, powered off).

    A live download writes at least once per read timeout, so a partial file whose last
    write is older than an hour (or twice the timeout, if that is longer) has no writer. Only
    names :func:`download` makes are touched.
    """
    cutoff = time.time() - max(STALE_PARTIAL_SECONDS, 2 * timeout)
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(folder):
            if _PARTIAL.match(entry.name):
                with contextlib.suppress(FileNotFoundError):
                    if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                        os.unlink(entry.path)


def check_url(url: str) -> None:
    """Refuse a URL that cannot be fetched as it is written, before anything is sent.

    Raises:
        CheckpointError: not ``http(s)://``, unparseable (``http://[::1/x``), without a host,
            with an invalid port, or with spaces or control characters.
    """
    problem = None
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError for a port out of range or not a number)
    except ValueError as err:
        problem = str(err)
    else:
        if parts.scheme not in ('http', 'https'):
            problem = 'only http:// and https:// URLs are downloaded'
        elif not parts.hostname:
            problem = 'it names no host'
        elif re.search(r'[\x00-\x20\x7f]', url):
            problem = 'it holds spaces or control characters (quote them as %20...)'
    if problem:
        raise CheckpointError(f'Could not download checkpoint {url!r}: malformed URL '
                              f'({problem})')


# --------------------------------------------------------------------------- the connection
class _Watchdog:
    """Shuts a download's connections down, wherever it waits, when its deadline passes or
    a span of ``span`` seconds (from the request on) brings less than ``min_rate`` body bytes
    a second."""

    def __init__(self, seconds: float, span: float, min_rate: float) -> None:
        self.seconds, self.span, self.min_rate = seconds, span, min_rate
        self.stopped: str | None = None  # why the connections were shut down
        self._arrived = 0
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> _Watchdog:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._done.set()

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            if self.stopped:
                self._shut(sock)

    def arrived(self, count: int) -> None:
        """Count ``count`` body bytes toward the current span."""
        with self._lock:
            self._arrived += count

    def _watch(self) -> None:
        start = span_start = time.monotonic()
        while not self._done.wait(max(0.0, min(span_start + self.span, start + self.seconds)
                                      - time.monotonic())):
            now = time.monotonic()
            with self._lock:
                if now >= start + self.seconds:
                    self.stopped = f'it took more than {self.seconds:g} s in all'
                elif now >= span_start + self.span:
                    if self._arrived < self.min_rate * (now - span_start):
                        self.stopped = (f'{self._arrived} bytes arrived in '
                                        f'{now - span_start:.1f} s, slower than the '
                                        f'{self.min_rate:g} bytes/s required')
                    span_start, self._arrived = now, 0
                if self.stopped:
                    for sock in self._sockets:
                        self._shut(sock)
                    return

    @staticmethod
    def _shut(sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)  # wakes a read blocked in another thread


class _WatchedConnections:
    """Mixin of the HTTP(S) handlers: every connection they open is under the watchdog."""

    def __init__(self, watchdog: _Watchdog) -> None:
        super().__init__()
        self.watchdog = watchdog

    def do_open(self, http_class: type, req: urllib.request.Request, **kwargs: object
                ) -> http.client.HTTPResponse:
        watchdog = self.watchdog

        class Connection(http_class):
            def connect(self) -> None:
                super().connect()
                watchdog.watch(self.sock)

        return super().do_open(Connection, req, **kwargs)


class _HTTPHandler(_WatchedConnections, urllib.request.HTTPHandler):
    pass


class _HTTPSHandler(_WatchedConnections, urllib.request.HTTPSHandler):
    pass


class _RedirectHandler(urllib.request.HTTPRedirectHandler):
    """Follows at most :data:`MAX_REDIRECTS` redirects, to ``http(s)://`` URLs only."""

    max_repeats = max_redirections = MAX_REDIRECTS + 1  # urllib's own checks come after ours

    def __init__(self, url: str) -> None:
        self.url = url

    def http_error_302(self, req, fp, code, msg, headers):
        """Refuse a redirect to another scheme, or one too many; follow the others."""
        target = headers.get('location') or headers.get('uri')
        if target is not None:
            target = urllib.parse.urljoin(req.full_url, target)
            if urllib.parse.urlsplit(target).scheme not in ('http', 'https'):
                raise CheckpointError(f'Refused to download checkpoint {self.url}: it redirects '
                                      f'to {target!r}, which is not an http(s) URL')
            if sum(getattr(req, 'redirect_dict', {}).values()) >= MAX_REDIRECTS:
                raise CheckpointError(f'Refused to download checkpoint {self.url}: it redirects '
                                      f'more than {MAX_REDIRECTS} times')
        return super().http_error_302(req, fp, code, msg, headers)

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302


def _opener(url: str, watchdog: _Watchdog) -> urllib.request.OpenerDirector:
    """An opener of http(s) only: proxies from the environment, watched connections, checked
    redirects, HTTP errors as exceptions."""
    opener = urllib.request.OpenerDirector()
    for handler in (urllib.request.ProxyHandler(), urllib.request.UnknownHandler(),
                    _HTTPHandler(watchdog), _HTTPSHandler(watchdog),
                    urllib.request.HTTPDefaultErrorHandler(), _RedirectHandler(url),
                    urllib.request.HTTPErrorProcessor()):
        opener.add_handler(handler)
    return opener


@contextlib.contextmanager
def _removed_on_sigterm(path: str, url: str) -> Iterator[None]:
    """Remove ``path`` if SIGTERM arrives in the block, then hand the signal to the previous
    handler (main thread only; nothing is installed where SIGTERM is ignored or handled
    outside Python)."""
    previous = signal.getsignal(signal.SIGTERM)
    if (threading.current_thread() is not threading.main_thread()
            or previous in (None, signal.SIG_IGN)):
        yield
        return

    def handler(signum: int, frame: object) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        signal.signal(signum, previous)
        if callable(previous):
            previous(signum, frame)
        else:
            signal.raise_signal(signum)
        raise CheckpointError(f'Stopped downloading checkpoint {url}: the process received '
                              f'SIGTERM')

    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        if signal.getsignal(signal.SIGTERM) is handler:
            signal.signal(signal.SIGTERM, previous)


# --------------------------------------------------------------------------- downloading
def _network_error(err: BaseException, timeout: float) -> str:
    """Why a download failed, in words: HTTP status, timeout, broken answer, socket error."""
    if isinstance(err, urllib.error.HTTPError):
        reason = str(err.reason).strip().splitlines()
        return f'HTTP {err.code} {reason[-1] if reason else ""}'.strip()
    if isinstance(err, urllib.error.URLError) and isinstance(err.reason, BaseException):
        err = err.reason
    if isinstance(err, TimeoutError):  # socket.timeout is TimeoutError since Python 3.10
        return f'no answer within {timeout:g} s (set {TIMEOUT_ENV} to wait longer)'
    if isinstance(err, http.client.IncompleteRead):
        return 'the connection closed before the whole file arrived'
    if isinstance(err, http.client.BadStatusLine):
        return f'the server sent no valid HTTP status line ({type(err).__name__})'
    if isinstance(err, http.client.HTTPException):
        return f'the answer is not valid HTTP ({type(err).__name__}: {err})'
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    text = str(getattr(err, 'reason', '') or err).strip().splitlines()
    return text[0] if text else type(err).__name__


class _Progress:
    """Checks the bytes of one download, as they arrive, against its limits."""

    def __init__(self, url: str, watchdog: _Watchdog, max_bytes: int) -> None:
        self.url, self.watchdog, self.max_bytes = url, watchdog, max_bytes
        self.received = 0

    def check_watchdog(self) -> None:
        """Raise if the watchdog has shut the connection down (deadline or rate)."""
        why = self.watchdog.stopped
        if why:
            variable, change = ((DEADLINE_ENV, 'allow longer') if why.startswith('it took')
                                else (MIN_RATE_ENV, 'accept slower'))
            raise CheckpointError(f'Stopped downloading checkpoint {self.url}: {why} (set '
                                  f'{variable} to {change})')

    def arrived(self, count: int) -> None:
        """Count ``count`` more bytes; raise if a limit is passed."""
        self.check_watchdog()
        self.received += count
        self.watchdog.arrived(count)
        if self.received > self.max_bytes:
            raise CheckpointError(f'Stopped downloading checkpoint {self.url}: it sent more '
                                  f'than the {self.max_bytes} bytes allowed (set '
                                  f'{MAX_BYTES_ENV} to allow more)')


def _fetch(url: str, partial: str, progress: _Progress, timeout: float, bar: bool) -> None:
    """Stream ``url`` into the new file ``partial``, checking the limits as bytes arrive."""
    request = urllib.request.Request(url, headers={'User-Agent': 'cvt-backbone'})
    with _opener(url, progress.watchdog).open(request, timeout=timeout) as response, \
            open(partial, 'xb') as out:
        declared = response.headers.get('Content-Length')
        declared = int(declared) if declared and declared.strip().isdigit() else None
        if declared is not None and declared > progress.max_bytes:
            raise CheckpointError(f'Refused to download checkpoint {url}: it announces '
                                  f'{declared} bytes, more than the {progress.max_bytes} '
                                  f'allowed (set {MAX_BYTES_ENV} to allow more)')
        with tqdm(total=declared, disable=not bar, unit='B', unit_scale=True,
                  unit_divisor=1024) as shown:
            while chunk := response.read1(_CHUNK):  # whatever arrived, not a full chunk
                progress.arrived(len(chunk))
                out.write(chunk)
                shown.update(len(chunk))
        progress.check_watchdog()  # a connection the watchdog shut down ends like a short one
        if declared is not None and progress.received != declared:
            raise CheckpointError(f'Could not download checkpoint {url}: the connection closed '
                                  f'after {progress.received} of {declared} bytes')
        out.flush()
        os.fsync(out.fileno())


def download(url: str, progress: bool = True) -> str:
    """Download ``url`` into the cache once; return the cached file.

    The bytes go to a ``.partial`` file, renamed to the cache file when complete and removed
    on any failure or SIGTERM; the limits of :func:`download_limits` hold throughout.

    Args:
        url: An ``http(s)://`` URL.
        progress: Show a progress bar while downloading.

    Raises:
        CheckpointError: the URL is malformed, cannot be fetched, redirects elsewhere than
            http(s), is too large, too slow or does not answer in time; one line says which
            (and which variable changes the limit).
    """
    check_url(url)
    target = cache_path(url)
    if osp.isfile(target):
        return target
    timeout, deadline, min_rate, max_bytes = download_limits()
    folder = osp.dirname(target)
    os.makedirs(folder, exist_ok=True)
    remove_stale_partials(folder, timeout)
    partial = f'{target}.{uuid.uuid4().hex[:12]}.partial'
    try:
        with _Watchdog(deadline, 2 * timeout, min_rate) as watchdog, \
                _removed_on_sigterm(partial, url):
            state = _Progress(url, watchdog, max_bytes)
            try:
                _fetch(url, partial, state, timeout, progress)
                os.replace(partial, target)
                return target
            except CheckpointError:
                raise
            except (urllib.error.URLError, http.client.HTTPException, OSError,
                    ValueError) as err:
                why = _network_error(err, timeout)
            state.check_watchdog()  # the watchdog shut the connection down: say so instead
            raise CheckpointError(f'Could not download checkpoint {url}: {why}')
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)


_HUB_FILE = re.compile(r'^(?P<repo>/[^/]+/[^/]+/resolve/[^/]+/)(?P<file>[^/]+)$')


def download_with_config(url: str, progress: bool = True) -> tuple[str, str | None]:
    """Download a checkpoint and, for a hub ``resolve/`` URL, the ``config.json`` beside it.

    Returns:
        The cached checkpoint and the cached ``config.json`` (None when the URL is no hub
        file URL or the repository has no ``config.json``).
    """
    path = download(url, progress)
    parts = urllib.parse.urlparse(url)
    match = _HUB_FILE.match(parts.path)
    if not match or match['file'] == 'config.json':
        return path, None
    config_url = parts._replace(path=match['repo'] + 'config.json', query='').geturl()
    try:
        return path, download(config_url, progress=False)
    except CheckpointError:
        return path, None
