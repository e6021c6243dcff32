"""`ganinv_core._errors.exc_line`: an exception quoted in a one-line message."""
import pytest

from ganinv_core._errors import exc_line


@pytest.mark.parametrize('exc, want', [
    (RuntimeError('CUDA error: out of memory\nCUDA kernel errors might be reported asynchronously'),
     'RuntimeError: CUDA error: out of memory'),
    (ValueError('\n  indented first line\nsecond'), 'ValueError: indented first line'),
    (KeyError(), 'KeyError'),
    (OSError('   '), 'OSError'),
])
def test_exc_line_is_one_line_with_the_type(exc, want):
    assert exc_line(exc) == want

