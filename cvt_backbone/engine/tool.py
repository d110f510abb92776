"""What every tool imports first: quiet third-party output, and :func:`run_tool`.

Importing this module silences, in this process, what is not the user's business (the
library itself filters nothing; only the tools import this):

* setuptools' ``pkg_resources is deprecated`` warning, which mmengine triggers when it looks
  up an installed package (``mmengine.utils.is_installed``);
* MMEngine's log lines that repeat for every parameter (``paramwise_options -- ...``, 79 of
  them for the demo classifier) or announce its own internal deprecations;
* the compiler and build flags in MMEngine's environment report (the torch version stays).
"""
import logging
import re
import warnings
from collections.abc import Callable

warnings.filterwarnings('ignore', message='pkg_resources is deprecated', category=UserWarning)

from mmengine.logging import MMLogger  # noqa: E402

from .runner import USER_ERRORS, run_tool  # noqa: E402  (the tools' one import)

__all__ = ['QuietThirdParty', 'USER_ERRORS', 'run_tool']

_DROPPED = re.compile(r'^(paramwise_options -- |"FileClient" will be deprecated|'
                      r'"HardDiskBackend" is the alias of "LocalBackend")')
#: From the build details that follow the torch version up to the next entry of the report.
_BUILD_DETAILS = re.compile(r'\n    PyTorch compiling details:.*?\n(?=\n|    \S)', re.DOTALL)


class QuietThirdParty(logging.Filter):
    """Drop or shorten the MMEngine log records listed in the module docstring."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if _DROPPED.search(message):
            return False
        if 'PyTorch compiling details:' in message:
            record.msg, record.args = _BUILD_DETAILS.sub('\n', message), ()
        return True


def _quiet_every_logger(init: Callable) -> Callable:
    def quiet_init(self, *args, **kwargs) -> None:
        init(self, *args, **kwargs)
        self.addFilter(QuietThirdParty())
    return quiet_init


if not getattr(MMLogger.__init__, '_quiet', False):
    MMLogger.__init__ = _quiet_every_logger(MMLogger.__init__)
    MMLogger.__init__._quiet = True
