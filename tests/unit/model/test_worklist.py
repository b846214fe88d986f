"""The wildcard matcher (broker.model.worklist.wildcard_match): the same answers as the ``.*``
regular expression it replaced, on patterns for which that expression backtracks for ever."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from broker.model.worklist import pn_matches, wildcard_match


def reference(pattern: str, value: str) -> bool:
    """The DICOM wildcard semantics as a regular expression (fine on small inputs)."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, re.DOTALL) is not None


patterns = st.text(alphabet="ab*?.\\[\n", max_size=10)
values = st.text(alphabet="ab.\\[\n", max_size=12)


@settings(max_examples=3000)
@given(patterns, values)
def test_same_answer_as_the_regular_expression(pattern: str, value: str) -> None:
    assert wildcard_match(pattern, value) == reference(pattern, value)


@settings(max_examples=1000)
@given(st.lists(st.text(alphabet="ab?", max_size=3), min_size=1, max_size=5),
       st.lists(st.text(alphabet="ab", max_size=4), max_size=5))
def test_a_value_built_from_the_pattern_matches(segments: list[str], fillers: list[str]) -> None:
    """A value made of the pattern's segments ('?' filled) with anything between them."""
    pattern = "*".join(segments)
    value = ""
    for i, segment in enumerate(segments):
        if i:
            value += fillers[i - 1] if i - 1 < len(fillers) else ""
        value += segment.replace("?", "b")
    assert wildcard_match(pattern, value)
    assert reference(pattern, value)


def test_edges() -> None:
    assert wildcard_match("", "")
    assert not wildcard_match("", "a")
    assert wildcard_match("*", "")
    assert wildcard_match("**", "abc")
    assert wildcard_match("a*", "a")
    assert not wildcard_match("a*a", "a")  # the ends may not overlap
    assert wildcard_match("a*a", "aa")
    assert wildcard_match("?*?", "ab")
    assert not wildcard_match("?*?", "a")
    assert wildcard_match("*[a]*", "x[a]y")  # no character classes
    assert not wildcard_match("*[a]*", "xay")
    assert wildcard_match("a.c", "a.c")
    assert not wildcard_match("a.c", "abc")


def test_many_stars_against_a_long_value() -> None:
    """``*a*a…*x`` against a long run of 'a': a backtracking ``.*`` expression tries every
    way of placing the stars (about C(200, 12) ≈ 10^20 for this one, which does not end);
    the matcher searches each segment once."""
    value = "a" * 200
    pattern = "*a" * 12 + "*x"
    assert not wildcard_match(pattern, value)
    assert wildcard_match("*a" * 12 + "*", value)
    assert not wildcard_match("*" + "a?" * 8 + "*" + "a?" * 8 + "*b", value * 50)


def test_pathological_person_name_query() -> None:
    """The Patient's Name query of issue #11: a dozen alternating '*' and letters against a
    long stored name; the PN policy (case folding, components) still applies."""
    stored = "A" * 60 + "^" + "B" * 60 + "=" + "C" * 60
    assert not pn_matches(stored, "*a" * 12 + "*x")
    assert pn_matches(stored, "*a" * 12 + "*^*b*")
    assert pn_matches(stored, "*c" * 12 + "*")
    assert pn_matches(stored, "*a" * 12 + "*=" + "*c" * 12 + "*")  # group by group
    assert not pn_matches(stored, "*a" * 12 + "*=" + "*a" * 12 + "*")
