"""reconciler.text: the lazily compiled patterns."""

from __future__ import annotations

import re
import subprocess
import sys

from reconciler import errors
from reconciler.text import lazy_pattern


def test_a_lazy_pattern_is_the_pattern_it_compiles_to() -> None:
    dotall = lazy_pattern(r"a.b", re.S)
    assert dotall.fullmatch("a\nb") is not None  # the flags are kept
    assert lazy_pattern(r"a.b").fullmatch("a\nb") is None
    assert dotall.sub("x", "a\nb a-b") == "x x" and dotall.pattern == "a.b" and dotall.flags & re.S


def test_errors_redaction_patterns_behave_as_compiled_ones() -> None:
    """The redaction patterns of errors.py are lazy: each matches as ``re.compile`` of it does."""
    assert errors._JSON_ESC.findall('"\\\n" \\u0041') == ["\\\n", "\\u0041"]  # re.S: a backslash, a newline
    assert errors._SPACED_HEX.search("bytes 72 6f 62 69 end").group() == "72 6f 62 69"


def test_a_plan_compiles_none_of_the_redaction_patterns_at_import() -> None:
    """Importing the modules a plan needs compiles none of errors.py's lazy patterns."""
    code = ("import reconciler.cli, reconciler.validation, reconciler.errors as e\n"
            "print(sum(p._compiled is not None for p in vars(e).values() if type(p).__name__ == '_LazyPattern'),"
            " sum(type(p).__name__ == '_LazyPattern' for p in vars(e).values()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == "0" and int(out[1]) >= 10, out
