"""_cli_options.py: sizes, the --url check (shown as typed, secrets left out), a sink named twice,
``~`` expansion. (The options through the real CLI — environment variables, unused sink
options — are tested in test_cli.py.)"""

from __future__ import annotations

from pathlib import Path

import click
import pytest

from logpipe import _cli_options as opts
from logpipe.errors import UsageError


@pytest.mark.parametrize(("text", "size"), [
    ("512", 512), ("512K", 512 << 10), ("100M", 100 << 20), ("100mb", 100 << 20),
    ("2G", 2 << 30), ("1.5GiB", 3 << 29), (" 1 T ", 1 << 40),
])
def test_sizes_are_powers_of_1024(text: str, size: int) -> None:
    """K/M/G/T (any case, with or without ``B``/``iB``) are powers of 1024, as logrotate and
    PM2 read them; fractions are allowed."""
    assert opts.parse_size(text) == size


def test_bad_or_zero_size_is_refused() -> None:
    """Not a size → ValueError with examples; through the click type, zero is refused too."""
    for bad in ("10X", "", "M", "-1M"):
        with pytest.raises(ValueError, match="is not a size"):
            opts.parse_size(bad)
    with pytest.raises(click.BadParameter, match="greater than zero"):
        opts.SIZE.convert("0", None, None)
    assert opts.SIZE.convert("1K", None, None) == 1024


@pytest.mark.parametrize(("url", "message"), [
    ("ftp://hec:8088", "--url 'ftp://hec:8088' is not an http(s) URL"),
    ("https://", "--url 'https://' is not an http(s) URL"),
    ("hec:8088", "--url 'hec:8088' is not an http(s) URL"),
    ("https://u:TOKEN@hec:0/p?token=TOKEN#f", "--url 'https://hec:0/p': bad port"),
    ("http://hec:65536", "--url 'http://hec:65536': bad port"),
    ("http://[::1", "--url 'http://[::1' is not an http(s) URL"),
])
def test_bad_url_is_named_as_typed_without_secrets(url: str, message: str) -> None:
    """A bad --url is one UsageError showing the URL as typed (port and path kept) without its
    user info, query or fragment; good URLs pass."""
    with pytest.raises(UsageError) as exc:
        opts.check_urls([url])
    assert message in str(exc.value) and "TOKEN" not in str(exc.value)
    opts.check_urls(["https://hec:8088", "http://127.0.0.1:8088/services/collector"])


def test_a_sink_named_twice_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same sink twice is refused (a file sink by its resolved directory, ``--dir`` for a
    bare ``file``, ``~`` expanded); two file sinks in different directories are fine."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    opts.check_sink_specs(["file:a", "file:b", "console", "ndjson"], None)
    opts.check_sink_specs(["file"], None)  # no directory: sinks.build says what is missing
    for specs, file_dir in ((["console", "console"], None), (["file:out", "file"], "out"),
                            (["file:~/x", f"file:{tmp_path}/x"], None),
                            (["file:out", "file:./out"], None)):
        with pytest.raises(UsageError, match="named twice"):
            opts.check_sink_specs(specs, file_dir)


def test_expand_home(monkeypatch: pytest.MonkeyPatch) -> None:
    """``~/x`` becomes ``$HOME/x`` (no shell expands it in ``--state-dir=~/x``); None and ""
    stay as they are."""
    monkeypatch.setenv("HOME", "/home/u")
    assert opts.expand_home("~/x") == "/home/u/x"
    assert opts.expand_home("/abs") == "/abs"
    assert opts.expand_home(None) is None and opts.expand_home("") == ""
