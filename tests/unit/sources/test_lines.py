"""LineAssembler: the one line path of stdin and children (split, cut marking, joiner, batches)."""

from __future__ import annotations

from logpipe import record
from logpipe.multiline import Joiner
from logpipe.sources._lines import TRUNCATION_MARKER, LineAssembler


def _asm(max_line: int = 1 << 20, joiner: Joiner | None = None) -> LineAssembler:
    return LineAssembler(record.LineNormaliser({record.SOURCE: "t"}), max_line, joiner)


def test_batch_ends_are_line_boundaries_across_chunks_and_the_partial_tail() -> None:
    """Each batch's ``end`` is the offset just past its last line: a line split across two
    chunks comes out once, whole, and the partial last line only at finish(), ending at the
    total byte count."""
    asm = _asm()
    data = b'{"message":"a"}\n{"message":"b"}\nplain c\n{"message":"d'
    first = list(asm.feed(data[:20]))
    rest = list(asm.feed(data[20:]))
    tail = list(asm.finish())
    msgs = [r["message"] for b in first + rest + tail for r in b.records]
    assert msgs == ["a", "b", "plain c", '{"message":"d']
    assert [b.end for b in first] == [16]
    assert [b.end for b in rest] == [data.index(b"plain c\n") + 8]
    assert [b.end for b in tail] == [len(data)] and asm.consumed == len(data)


def test_a_cut_line_is_flagged_and_its_raw_length_counts_in_end() -> None:
    """A line over ``max_line`` comes out cut with the marker and ``truncated: true``; the batch
    end counts its full raw length, so a checkpoint there never resumes inside it."""
    asm = _asm(max_line=10)
    data = b"x" * 50 + b"\nshort\n"
    (batch,) = list(asm.feed(data))
    cut, short = batch.records
    assert cut["message"].endswith(TRUNCATION_MARKER.decode()) and cut[record.TRUNCATED] is True
    assert short["message"] == "short" and record.TRUNCATED not in short
    assert batch.end == len(data)


def test_joined_groups_are_held_out_of_end_until_flushed() -> None:
    """With a joiner, a traceback is one record; while the joiner holds it, ``held`` > 0 and no
    batch end passes it; flush_groups() emits it with the end of its last line."""
    asm = _asm(joiner=Joiner())
    data = (b"before\nTraceback (most recent call last):\n  File \"x.py\", line 1, in <module>\n"
            b"ValueError: bad\n")
    out = list(asm.feed(data))
    assert [r["message"] for b in out for r in b.records] == ["before"]
    assert out[-1].end == len(b"before\n")
    assert asm.held > 0 and asm.idle_deadline is not None
    (group,) = list(asm.flush_groups())
    (rec,) = group.records
    assert rec["message"].startswith("Traceback") and rec["message"].endswith("ValueError: bad")
    assert group.end == len(data) and asm.held == 0


def test_batches_keep_lines_and_build_records_only_on_demand() -> None:
    """The assembler's batches carry the NDJSON lines and a NormalisedLines as records: a
    canonical line is passed on as its own bytes plus the spliced defaults, and its dict is
    built only when read."""
    asm = _asm()
    line = b'{"time":"2026-12-04T09:59:59.123456Z","level":"info","message":"a"}'
    (batch,) = list(asm.feed(line + b"\nplain b\n"))
    assert isinstance(batch.records, record.NormalisedLines)
    assert batch.lines[0] == line[:-1] + b',"source":"t"}'
    assert batch.records._records is None
    assert [r["message"] for r in batch.records] == ["a", "plain b"]
