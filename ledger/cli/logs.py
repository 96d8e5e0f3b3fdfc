"""What the services (`ledger consume`, `ledger serve`) write on stderr while they run: lines
for a person (`--log-format text`, the default) or one JSON object per line for a log
shipper (`--log-format json`: time, level, logger, message and the record's fields).

In JSON, everything the service says once it has parsed its command line is such an
object: its log records, uvicorn's, the notices a command prints on stderr (the
development-key warning, the address it serves on) and the error that stops it, which
carries its exit status as the field `exit_code`.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from ledger.cli.common import err, escape_control, plain
from ledger.errors import EXIT_ERROR, LedgerError, UsageError

LOG_FORMATS = ("text", "json")

LogFormatOption = Annotated[
    str,
    typer.Option(
        "--log-format",
        help="text: lines for people; json: one object per line (time, level, logger, "
        "message and the record's fields), for a log shipper.",
    ),
]

# What every LogRecord carries; anything else on a record is a field its caller gave
# (`extra=`), written as a key of its own in JSON.
_RECORD_ATTRIBUTES = frozenset(
    logging.LogRecord("", logging.INFO, "", 0, "", (), None).__dict__
) | {"message", "asctime", "taskName"}
# The keys of a JSON line that no field may replace.
_RESERVED = ("time", "level", "logger", "message")
# uvicorn's access log passes these as the arguments of its message.
_ACCESS_FIELDS = ("client", "method", "path", "http_version", "status")


class PlainFormatter(logging.Formatter):
    """Log lines quote input (dead-letter reasons, positions, request paths, database
    messages): control characters in them are spelled out, so a hostile record cannot
    drive the terminal that tails the log. Tracebacks, appended after the message, keep
    their lines."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return escape_control(super().formatMessage(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line: `time` (UTC, ISO 8601 with milliseconds),
    `level`, `logger`, `message`, then the record's fields, and `exception` with the
    traceback when there is one. ASCII only: whatever input a message quotes, a line
    cannot drive a terminal and stays one line."""

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created, UTC)
        line: dict[str, Any] = {
            "time": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in _fields(record).items():
            if key not in _RESERVED:
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields = {
        key: value
        for key, value in record.__dict__.items()
        if key not in _RECORD_ATTRIBUTES and not key.startswith("_")
    }
    args = record.args
    if record.name == "uvicorn.access" and isinstance(args, tuple) and len(args) == 5:
        fields.update(zip(_ACCESS_FIELDS, args, strict=True))
    return fields


def check_log_format(value: str) -> str:
    if value not in LOG_FORMATS:
        raise UsageError(f"--log-format {value!r}: expected text or json")
    return value


class ServiceLog:
    """Where a service says things: its logger, and the notices commands otherwise print
    on stderr, in the chosen format."""

    def __init__(self, log_format: str, logger: str) -> None:
        self.json = check_log_format(log_format) == "json"
        self.logger = logging.getLogger(logger)

    def configure(self, text_format: str, *, force: bool = False) -> None:
        """Send every log record to stderr, in this format (`text_format` for text)."""
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter() if self.json else PlainFormatter(text_format))
        logging.basicConfig(level=logging.INFO, handlers=[handler], force=force)

    def say(self, text: str, level: int = logging.INFO, **fields: Any) -> None:
        """A notice: one plain line on stderr for a person, a log record in JSON (where
        the level says "warning", the text need not)."""
        if self.json:
            if level == logging.WARNING:
                text = text.removeprefix("warning: ")
            self.logger.log(level, "%s", text, extra=fields)
        else:
            err.print(plain(text), soft_wrap=True)

    @contextmanager
    def errors(self) -> Iterator[None]:
        """In JSON, the error that stops the service as a log record (with `exit_code`),
        then its exit status; in text, the `ledger: error:` line as for every command."""
        try:
            yield
        except (LedgerError, OSError) as exc:
            if not self.json:
                raise
            code = exc.exit_code if isinstance(exc, LedgerError) else EXIT_ERROR
            self.logger.error("%s", str(exc) or type(exc).__name__, extra={"exit_code": code})
            raise typer.Exit(code) from None
