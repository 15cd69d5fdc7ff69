"""README.md against the real CLI: every ``logpipe <command> --flag`` it shows exists.

sqlite-utils style (its tests/test_docs.py): parse the README's code (fenced and indented
blocks, inline code spans), find each ``logpipe collect|sink|rotate`` command line, and check
that ``logpipe <command> --help`` lists every long option used there; the sink table's options
must be in ``logpipe sink --help``; ``logpipe --help`` lists the three commands.
"""

from __future__ import annotations

import functools
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from tests.helpers import LOGPIPE

README = Path(__file__).resolve().parent.parent / "README.md"
COMMANDS = ("collect", "sink", "rotate", "logs", "status")
_FLAG = re.compile(r"^\[?(--[a-z][a-z0-9-]*)")
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


@functools.cache
def help_text(*args: str) -> str:
    """``logpipe ARGS --help`` as a real process (wide, so nothing is wrapped away)."""
    proc = subprocess.run([*LOGPIPE, *args, "--help"], capture_output=True, text=True,
                          env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"}, check=True, timeout=30)
    return proc.stdout


def code_snippets(markdown: str) -> list[str]:
    """Fenced blocks, 4-space indented blocks and inline code spans, as text."""
    snippets: list[str] = []
    fenced = re.compile(r"^```[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
    snippets += fenced.findall(markdown)
    prose = fenced.sub("", markdown)
    indented: list[str] = []
    for line in prose.splitlines():
        if line.startswith("    ") and line.strip():
            indented.append(line[4:])
        elif indented:
            snippets.append("\n".join(indented))
            indented = []
    if indented:
        snippets.append("\n".join(indented))
    snippets += re.findall(r"`([^`\n]+)`", prose)
    return snippets


def commands_in(text: str) -> list[tuple[str, list[str]]]:
    """Every ``logpipe <command> ...`` in a snippet → (command, long options it uses).

    Shell-aware: continuation lines are joined, a command ends at ``|``, ``;``, ``&&``, ``#``;
    a quoted argument is not searched for options (``--run api="python api.py --port 1"`` uses
    ``--run`` only), except a quoted whole command such as ``R="logpipe rotate --daily …"``.
    """
    found: list[tuple[str, list[str]]] = []
    for line in text.replace("\\\n", " ").splitlines():
        if "logpipe" not in line:
            continue
        lex = shlex.shlex(line, posix=True, punctuation_chars=True)
        lex.whitespace_split = True
        lex.commenters = "#"
        try:
            tokens = list(lex)
        except ValueError:  # unbalanced quotes: prose, not a command
            continue
        i = 0
        while i < len(tokens):
            tok = tokens[i]
            if " " in tok and "logpipe " in tok:  # a whole command in one quoted word
                found += commands_in(_ASSIGNMENT.sub("", tok))
            if tok.rsplit("/", 1)[-1] == "logpipe" and i + 1 < len(tokens) \
                    and tokens[i + 1] in COMMANDS:
                cmd, flags = tokens[i + 1], []
                i += 2
                while i < len(tokens) and tokens[i] not in ("|", "||", "&&", ";", "&", ")", "("):
                    m = _FLAG.match(tokens[i])
                    if m:
                        flags.append(m[1])
                    i += 1
                found.append((cmd, flags))
                continue
            i += 1
    return found


def documented_commands() -> list[tuple[str, list[str]]]:
    """Every logpipe command line in README.md."""
    out: list[tuple[str, list[str]]] = []
    for snippet in code_snippets(README.read_text()):
        out += commands_in(snippet)
    return out


def sink_table_options() -> list[str]:
    """The options in the README's sink table (rows such as ``| `file` | … | `--dir`, … |``)."""
    flags: list[str] = []
    for line in README.read_text().splitlines():
        if re.match(r"^\| `(console|file|splunk|ndjson)` \|", line):
            flags += re.findall(r"`(--[a-z][a-z0-9-]*)", line)
    return flags


def test_readme_parser_finds_the_commands() -> None:
    """The parser sees what a reader sees: the README's main commands and their options (so a
    broken parser cannot make the next test pass vacuously)."""
    cmds = documented_commands()
    by_cmd = {c: {f for cc, fs in cmds if cc == c for f in fs} for c in COMMANDS}
    assert {"--pm2", "--run", "--to", "--max-size", "--retain", "--once", "--service"} \
        <= by_cmd["collect"]
    assert {"--url", "--dir", "--max-size", "--daily", "--retain", "--service"} <= by_cmd["sink"]
    assert {"--daily", "--max-size", "--retain"} <= by_cmd["rotate"]
    # an option inside a --run command belongs to the child, not to logpipe
    assert commands_in('logpipe collect --run api="python api.py --port 1" --to console') \
        == [("collect", ["--run", "--to"])]
    assert commands_in('R="logpipe rotate --daily x"; $R && pm2 reloadLogs && $R') \
        == [("rotate", ["--daily"])]
    assert len(sink_table_options()) >= 10


@pytest.mark.parametrize("command", COMMANDS)
def test_every_documented_option_exists(command: str) -> None:
    """Each long option README.md uses with ``logpipe <command>`` is listed by that command's
    ``--help`` (a renamed or removed option breaks the documentation, and this test)."""
    documented = sorted({f for c, fs in documented_commands() if c == command for f in fs})
    assert documented
    listed = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", help_text(command)))
    missing = [f for f in documented if f not in listed]
    assert not missing, f"README uses logpipe {command} {missing}, not in its --help"


def test_sink_table_options_exist() -> None:
    """The options the README's sink table names are options of ``logpipe sink``."""
    listed = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", help_text("sink")))
    missing = sorted(set(sink_table_options()) - listed)
    assert not missing, missing


def test_documented_sink_variables_are_in_sink_help() -> None:
    """README says every sink option also comes from ``LOGPIPE_*`` (see ``logpipe sink
    --help``): each sink variable it names (LOGPIPE_CONSOLE_/FILE_/SPLUNK_…) is in that help."""
    named = set(re.findall(r"LOGPIPE_(?:CONSOLE|FILE|SPLUNK)_[A-Z_]*[A-Z]", README.read_text()))
    assert {"LOGPIPE_CONSOLE_FORMAT", "LOGPIPE_FILE_DIR", "LOGPIPE_SPLUNK_URL",
            "LOGPIPE_SPLUNK_TOKEN"} <= named
    text = help_text("sink")
    missing = sorted(v for v in named if v not in text)
    assert not missing, missing


def test_main_help_lists_the_commands() -> None:
    """``logpipe --help`` lists collect, sink and rotate, each with its one-line summary."""
    text = help_text()
    for command in COMMANDS:
        assert re.search(rf"^  {command}\s+\S", text, re.MULTILINE), text
    assert "..." not in text.split("Commands:")[1], "a command's summary is cut off"


def test_help_examples_use_real_options() -> None:
    """The examples inside the commands' own --help texts use options that exist too."""
    for source in ("", *COMMANDS):
        for command, flags in commands_in(help_text(*([source] if source else []))):
            listed = help_text(command)
            assert all(f in listed for f in flags), (command, flags)


def test_every_option_named_in_readme_exists() -> None:
    """Any ``--option`` README.md names in code, even alone in prose (`--max-line-bytes`,
    `--copytruncate`), is an option of at least one logpipe command (another program's options,
    as in `pm2 logs --raw`, are not logpipe's)."""
    named: set[str] = set()
    for snippet in code_snippets(README.read_text()):
        if snippet.lstrip().startswith("--"):  # an option named on its own
            named.add(snippet.split()[0].split("=")[0])
        named.update(f for _, flags in commands_in(snippet) for f in flags)
    assert {"--max-line-bytes", "--copytruncate", "--state-dir", "--once", "--max-age",
            "--dry-run", "--index", "--ack"} <= named
    listed: set[str] = set()
    for command in COMMANDS:
        listed.update(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", help_text(command)))
    missing = sorted(named - listed - {"--help", "--version"})
    assert not missing, missing


@pytest.mark.parametrize("command", ("", *COMMANDS))
def test_help_fits_an_80_column_terminal(command: str) -> None:
    """On an 80-column terminal every help line fits, except a copy-paste example command line
    (cron entries are kept whole); before, rotate's paragraphs were 90 columns wide."""
    proc = subprocess.run([*LOGPIPE, *([command] if command else []), "--help"],
                          capture_output=True, text=True, check=True, timeout=30,
                          env={"COLUMNS": "80", "PATH": "/usr/bin:/bin"})
    wide = [ln for ln in proc.stdout.splitlines() if len(ln) > 80 and "logpipe " not in ln]
    assert not wide, wide


def test_rotate_state_dir_help_matches_readme() -> None:
    """README: "Give rotate the collector's `--state-dir`"; rotate's --help says the same (it
    said "checkpoints and spools", which rotate writes neither of)."""
    text = " ".join(help_text("rotate").split())
    assert "--state-dir DIRECTORY the collector's state dir" in text
    assert "Give rotate the collector's `--state-dir`" in README.read_text()
