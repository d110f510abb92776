"""The errors this package raises for what a user can fix (their messages name the culprit
and what to set), and :func:`run_main`, the tools' error boundary."""
from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable

#: Set to 1 to see the traceback behind a tool's ``error:`` line.
DEBUG_ENV = 'CVT_DEBUG'
#: How much of a message one line shows.
_LINE = 1000


class CheckpointError(ValueError):
    """A checkpoint could not be read safely, or does not fit; the message names it."""


class ConfigError(ValueError):
    """Parts of a config that do not fit together; the message names the field to change."""


class SetupError(ImportError):
    """A package the work needs is missing, broken or built for another torch; the message
    says what to install."""


#: Errors whose message says all a user needs to read.
USER_ERRORS = (CheckpointError, ConfigError, SetupError, FileNotFoundError, FileExistsError)


def printable(text: str) -> str:
    """``text`` with what a terminal would act on (control characters) or cannot show escaped."""
    return ''.join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def error_line(err: BaseException, user_errors: tuple[type[BaseException], ...] = ()) -> str:
    """One line for ``err``: its message, with the exception's name where the message alone
    would not say what happened (a ``KeyError``'s bare key, say): for anything but
    :data:`USER_ERRORS` and ``user_errors``. Characters a terminal would act on (control
    characters, which a file's names may carry) and undecodable ones are shown escaped."""
    message = printable(' '.join(str(err).split()))
    if not isinstance(err, (*USER_ERRORS, *user_errors)) or not message:
        message = f'{type(err).__name__}: {message}' if message else type(err).__name__
        message += f' ({DEBUG_ENV}=1 shows where)'
    return message if len(message) <= _LINE else message[:_LINE - 3] + '...'


def run_main(main: Callable[[], object],
             user_errors: tuple[type[BaseException], ...] = ()) -> None:
    """Run a tool's ``main``; anything it raises ends the process with ``error: <one line>``
    (:func:`error_line`) and exit status 1 (``CVT_DEBUG=1``: with the traceback).
    ``Ctrl-C`` and ``sys.exit`` keep their meaning. While it runs, the deprecation warning
    of ``pkg_resources`` that MMEngine's config loading triggers is not shown.

    An argument that is not valid UTF-8 text (a file name in another encoding) is refused
    first: the logs and outputs that would name it cannot.

    Args:
        main: The tool's ``main``.
        user_errors: The tool's own errors whose message says all (as :data:`USER_ERRORS`).
    """
    try:
        for arg in sys.argv[1:]:
            if arg.encode('utf-8', 'ignore').decode('utf-8') != arg:  # undecodable bytes
                raise ConfigError(f'the argument {ascii(arg)} is not valid UTF-8 text: '
                                  f'rename what it names')
        with warnings.catch_warnings():
            # MMEngine's is_installed imports pkg_resources (setup.py pins setuptools<81 to
            # keep it): its deprecation warning is nothing a user of a tool can act on
            warnings.filterwarnings('ignore', 'pkg_resources is deprecated', UserWarning)
            main()
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as err:  # noqa: BLE001 -- the boundary: every failure is one line
        if os.environ.get(DEBUG_ENV, '') not in ('', '0'):
            raise
        sys.exit(f'error: {error_line(err, user_errors)}')
