"""Test-only instrumentation of a training process's file operations (``custom_imports``).

When ``CVT_TEST_SAVE_STAGES`` is set, every ``os.replace``, ``os.remove`` and ``os.unlink``
prints ``@stage before|after <operation> <file name>`` and pauses a little on each side, so
that a test can kill the process at a chosen moment of a checkpoint save. Kept outside
``test_*.py`` so that pytest does not collect it.
"""
import os
import sys
import time

PAUSE = float(os.environ.get('CVT_TEST_SAVE_STAGES', '0') or 0)


def _instrument(name: str) -> None:
    original = getattr(os, name)

    def staged(*args, **kwargs):
        target = os.path.basename(str(args[-1] if name == 'replace' else args[0]))
        print(f'@stage before {name} {target}', flush=True)
        time.sleep(PAUSE)
        result = original(*args, **kwargs)
        print(f'@stage after {name} {target}', flush=True)
        time.sleep(PAUSE)
        return result

    setattr(os, name, staged)


if PAUSE:
    for _name in ('replace', 'remove', 'unlink'):
        _instrument(_name)
    print('@stage instrumented', file=sys.stderr, flush=True)
