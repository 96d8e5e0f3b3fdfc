"""Terminal safety underneath the commands: the escaping helpers the CLI prints through, and
the services' log lines, as text and as JSON. The commands themselves, fed hostile input, are in
tests/e2e/test_terminal_safety.py."""

from __future__ import annotations

import json
import logging

from rich.console import Console

from ledger.cli.common import escape_control, plain
from ledger.cli.logs import JsonFormatter, PlainFormatter

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


def test_a_json_log_line_is_one_ascii_line_whatever_it_quotes() -> None:
    hostile = f"{ESC}[2J\u202e\n\x9b中文"
    args = ("t[0]@1", hostile)
    record = logging.LogRecord(
        "ledger.consume", logging.WARNING, __file__, 1, "dead letter %s: %s", args, None
    )
    record.position, record.reason = "t[0]@1", hostile  # the fields a caller gives (`extra=`)
    record.lag = {0: 3}
    record.when = object()  # not JSON: written as text, never a failure to log
    line = JsonFormatter().format(record)
    assert "\n" not in line and line.isascii()
    logged = json.loads(line)
    assert logged["message"] == f"dead letter t[0]@1: {hostile}"
    assert (logged["level"], logged["logger"]) == ("warning", "ledger.consume")
    assert (logged["position"], logged["reason"], logged["lag"]) == ("t[0]@1", hostile, {"0": 3})
    assert logged["when"].startswith("<object object")


def test_a_field_cannot_take_the_place_of_the_message() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "the message", (), None)
    record.message_id = 7
    for reserved in ("time", "level", "logger"):
        setattr(record, reserved, "forged")
    logged = json.loads(JsonFormatter().format(record))
    assert logged["message"] == "the message" and logged["level"] == "info"
    assert logged["logger"] == "x" and logged["time"] != "forged" and logged["message_id"] == 7
