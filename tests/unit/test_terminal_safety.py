"""Terminal safety underneath the commands: the escaping helpers the CLI prints through, and
the consumer's log lines. The commands themselves, fed hostile input, are in
tests/e2e/test_terminal_safety.py."""

from __future__ import annotations

import logging

from rich.console import Console

from consumers.cli import PlainFormatter
from ledger.cli.common import escape_control, plain

ESC = "\x1b"


def test_the_helpers() -> None:
    assert (
        escape_control(f"a{ESC}[2Jb\x07\x9b\u202e\n\tc") == "a\\x1b[2Jb\\x07\\x9b\\u202e\\x0a\\x09c"
    )
    assert escape_control("plain, 中文, C:\\path") == "plain, 中文, C:\\path"
    console = Console(record=True, width=200, color_system=None)
    for text in ("[/]", "[bold red]x[/bold red]", ":thumbs_up:", f"{ESC}[2J"):
        console.print(plain(text))
    assert console.export_text().splitlines() == [
        "[/]",
        "[bold red]x[/bold red]",
        ":thumbs_up:",
        "\\x1b[2J",
    ]


def test_consumer_log_lines_spell_out_control_characters() -> None:
    record = logging.LogRecord(
        "ledger.consume",
        logging.WARNING,
        __file__,
        1,
        "dead letter %s: %s",
        ("t[0]@1", f"{ESC}[2J"),
        None,
    )
    line = PlainFormatter("%(levelname)s %(message)s").format(record)
    assert line == "WARNING dead letter t[0]@1: \\x1b[2J"
