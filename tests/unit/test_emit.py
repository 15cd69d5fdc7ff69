"""_emit.py: the logger's call path — a call never raises and writes exactly one valid line,
whatever it is given (SPEC §2)."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import logpipe
from tests._logger_helpers import capture

_ANY = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats()
    | st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x10FFFF), max_size=8)
    | st.binary(max_size=8) | st.builds(object),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=10,
)


class _Hostile:
    def __repr__(self) -> str:
        raise RuntimeError("repr exploded")


class _Plain:
    def __repr__(self) -> str:
        return "<Plain>"


def test_a_call_never_raises_whatever_it_is_given(tmp_path: Path) -> None:
    """Unserialisable values are rendered with repr (or a placeholder when repr raises), invalid
    bytes and lone surrogates are replaced, huge ints and cycles survive, a bad %-format keeps
    its arguments, and a non-string message is kept — each call still writes one valid line."""
    cyclic: dict[str, object] = {}
    cyclic["self"] = cyclic
    with capture(tmp_path) as read:
        logpipe.logger.info("objects", obj=_Plain(), hostile=_Hostile(), tags={"a"})
        logpipe.logger.info("bytes", raw=b"ok\xff\xfe", name="caf\udce9")
        logpipe.logger.info("big", n=2**80, cyclic=cyclic)
        logpipe.logger.info("bad %d format", "x")
        logpipe.logger.info(12345)
        logpipe.logger.info("msg \udcff")
        logpipe.logger.bind(**{"weird key\n": 1}).info("keys")
        logpipe.logger.info()
        logpipe.logger.info("names of parameters", self="s", event="e", level="loud")
    recs = read()
    assert len(recs) == 9
    assert recs[0]["obj"] == "<Plain>" and recs[0]["hostile"] == "<unrepresentable _Hostile>"
    assert recs[0]["tags"] == ["a"]
    assert recs[1]["raw"] == "ok\ufffd\ufffd" and recs[1]["name"] == "caf\ufffd"
    assert recs[2]["n"] == str(2**80) and "cyclic" in recs[2]
    assert recs[3]["message"] == "bad %d format ('x',)"
    assert recs[4]["message"] == 12345
    assert recs[5]["message"] == "msg \ufffd"
    assert recs[6]["weird key\n"] == 1
    assert "message" not in recs[7] and recs[7]["level"] == "info"
    assert (recs[8]["self"], recs[8]["event"], recs[8]["level"]) == ("s", "e", "info")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(message=st.one_of(st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x10FFFF)),
                         st.integers(), st.none(), st.builds(object)),
       fields=st.dictionaries(st.text(min_size=1, max_size=8), _ANY, max_size=4),
       ctx=st.dictionaries(st.text(min_size=1, max_size=8), _ANY, max_size=2))
def test_any_call_writes_exactly_one_valid_line(tmp_path: Path, message: object,
                                                fields: dict[str, object],
                                                ctx: dict[str, object]) -> None:
    """Property: whatever message, fields and context values (surrogates, bytes, huge ints, NaN,
    objects, nesting), each call returns None and writes exactly one line of valid UTF-8 JSON."""
    with capture(tmp_path) as read:
        with logpipe.context(**ctx):
            assert logpipe.logger.warning(message, **fields) is None
        recs = read()
    assert len(recs) == 1 and recs[0]["level"] == "warning"
