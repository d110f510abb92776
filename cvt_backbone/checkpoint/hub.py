"""Hub repository ids as checkpoints: ``'microsoft/cvt-13'``, as transformers users write them.

Which strings are hub ids (:func:`~.read.is_hub_id`), what is fetched and with which settings:
see docs/downloads.md. Every failure is one :class:`CheckpointError` line naming the id.
"""
from __future__ import annotations

from types import ModuleType

from ..errors import CheckpointError
from .read import parse_hub_id

_INSTALL = 'pip install "cvt-backbone[hub]" (or pip install huggingface_hub)'

def _import_hub(source: str) -> ModuleType:
    try:
        import huggingface_hub
        import huggingface_hub.constants  # noqa: F401  (the settings messages name)
        import huggingface_hub.utils  # noqa: F401  (its errors)
    except ImportError:
        raise CheckpointError(f'Checkpoint {source!r} is no local file or folder, so it is read '
                              f'as a hub repository id, which needs huggingface_hub: '
                              f'{_INSTALL}') from None
    return huggingface_hub


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return f'{type(err).__name__}: {lines[0]}' if lines else type(err).__name__


def _why(hub: ModuleType, err: Exception, repo_id: str, revision: str | None) -> str:
    """A failure of ``hf_hub_download``, in words."""
    errors = hub.utils
    if isinstance(err, errors.GatedRepoError):
        return ('it is gated: accept its conditions on the hub, then log in '
                '(huggingface-cli login, or set HF_TOKEN)')
    if isinstance(err, errors.RepositoryNotFoundError):
        return (f'no local file or folder has that name, and {hub.constants.ENDPOINT} has no '
                f'repository {repo_id!r} (a private one needs a login: huggingface-cli login, '
                f'or set HF_TOKEN)')
    if isinstance(err, errors.RevisionNotFoundError):
        return f'the repository has no revision {revision!r}'
    if isinstance(err, ValueError):
        return f'{repo_id!r} is not a valid repository id ({_first_line(err)})'
    return f'the download failed ({_first_line(err)})'


def _fetch(hub: ModuleType, source: str, repo_id: str, revision: str | None,
           names: tuple[str, ...]) -> str:
    """The cached copy of the first of ``names`` the repository has, downloaded if need be."""
    errors = hub.utils
    not_cached = None
    for name in names:
        try:
            return hub.hf_hub_download(repo_id, name, revision=revision)
        # Whatever huggingface_hub or its HTTP library raises: a network failure is not
        # always an OSError.
        except Exception as err:  # noqa: BLE001
            if isinstance(err, errors.LocalEntryNotFoundError):
                not_cached = not_cached or err  # another name may be cached
            elif not isinstance(err, errors.EntryNotFoundError):
                raise CheckpointError(f'Could not read hub repository {source!r}: '
                                      f'{_why(hub, err, repo_id, revision)}') from None
    if not_cached is not None:
        reason = ('HF_HUB_OFFLINE is set' if hub.constants.HF_HUB_OFFLINE else
                  type(not_cached.__cause__ or not_cached).__name__)
        raise CheckpointError(f'Could not read hub repository {source!r}: '
                              f'{" or ".join(names)} is not in the cache '
                              f'({hub.constants.HF_HUB_CACHE}) and {hub.constants.ENDPOINT} '
                              f'cannot be reached ({reason})')
    raise CheckpointError(f'Hub repository {source!r} has no {" and no ".join(names)}')


def fetch_hub_files(source: str, weights: tuple[str, ...]) -> tuple[str, str]:
    """Fetch (or take from the cache) a hub repository's ``config.json`` and weights.

    Args:
        source: A hub id (:func:`parse_hub_id`).
        weights: The weights files to look for, in order.

    Returns:
        The cached ``config.json`` and the cached first of ``weights`` the repository has.

    Raises:
        CheckpointError: huggingface_hub is not installed; the repository, revision or a file
            does not exist; it is neither cached nor reachable; or the download fails. One
            line, naming ``source``.
    """
    repo_id, revision = parse_hub_id(source)
    hub = _import_hub(source)
    config = _fetch(hub, source, repo_id, revision, ('config.json', ))
    return config, _fetch(hub, source, repo_id, revision, weights)
