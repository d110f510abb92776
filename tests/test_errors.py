"""The tools' error boundary: one line, escaped, for whatever goes wrong."""
import sys
import warnings

import pytest

from cvt_backbone.errors import CheckpointError, error_line, run_main


def test_an_error_line_escapes_what_a_terminal_would_act_on():
    line = error_line(CheckpointError("class 'c\x1b[2J' of\nckpt \udcff.pth"))
    assert line == "class 'c\\x1b[2J' of ckpt \\udcff.pth"
    assert line.isprintable()


def test_an_error_without_a_message_of_its_own_is_named():
    assert error_line(KeyError('x')) == "KeyError: 'x' (CVT_DEBUG=1 shows where)"


def test_an_argument_that_is_not_utf8_is_refused_before_main_runs(monkeypatch):
    ran = []
    monkeypatch.setattr(sys, 'argv', ['tool.py', 'ck\udcff.pth'])
    with pytest.raises(SystemExit, match=r"^error: the argument 'ck\\udcff\.pth' is not valid "
                                         r'UTF-8 text: rename what it names$'):
        run_main(lambda: ran.append(1))
    assert not ran


def test_main_runs_without_the_pkg_resources_deprecation_warning(monkeypatch):
    monkeypatch.setattr(sys, 'argv', ['tool.py'])

    def main():
        warnings.warn('pkg_resources is deprecated as an API', UserWarning, stacklevel=1)
        warnings.warn('something to act on', UserWarning, stacklevel=1)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        run_main(main)
    assert [str(w.message) for w in caught] == ['something to act on']
