"""What every command shares: consoles, the one error handler, option types, settings, and
the wiring of stores and projectors (the CLI is the composition root)."""

from __future__ import annotations

import errno
import gc
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.text import Text
from typer.core import TyperGroup

from ledger.cli import emit_json as emit_json
from ledger.cli import escape_control as escape_control
from ledger.cli import parse_time as parse_time
from ledger.cli import plain as plain
from ledger.cli import settings as settings
from ledger.cli import stderr_console, stdout_console
from ledger.cli.options import DB, JSON, Argument, Option
from ledger.config import Settings
from ledger.domain.limits import quote
from ledger.errors import EXIT_ERROR, LedgerError, UsageError

# The consoles, `plain`, `escape_control`, `emit_json`, `settings` and `parse_time` live in
# the typer-free `ledger.cli` (for `ledger.cli.history.run_plain`); every command takes them
# from here.
out = stdout_console()
err = stderr_console()


def markup_safe(value: object) -> str:
    """`value` to interpolate into a string that is printed with markup on purpose."""
    return escape(escape_control(str(value)))


def report(message: str) -> None:
    # A LedgerError message is one line, except PolicyError's indented line per problem:
    # only those line breaks survive; any other is input and spelled out.
    lines = re.split(r"\n(?=  )", message)
    text = "\n".join(escape_control(line) for line in lines)
    # soft_wrap: the contract is one line per error, whatever the terminal width.
    err.print(Text(f"ledger: error: {text}"), soft_wrap=True)


DEV_KEY_WARNING = (
    "warning: LEDGER_PHONE_KEY is not set: phone hashes use the public development key and "
    "can be reversed; set it in every real deployment"
)


def warn_if_dev_phone_key(s: Settings) -> None:
    """Called once by each command that stores phone hashes, before it stores any."""
    if s.uses_dev_phone_key:
        err.print(Text(DEV_KEY_WARNING), soft_wrap=True)


def failed(exc: LedgerError | OSError) -> int:
    """The error line for a command's failure, on stderr, and the exit status it means
    (`ledger.errors`): every command's one handler, in `LedgerGroup` and in
    `ledger.cli.history.run_plain`."""
    if isinstance(exc, LedgerError):
        report(str(exc))
        return exc.exit_code
    if isinstance(exc, BrokenPipeError):
        # The reader left (`ledger history u-1 | head`): nothing to say, and nobody to
        # say it to on stdout; the interpreter's last flush must not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_ERROR
    report(str(exc))
    return EXIT_ERROR


def without_flag_placeholders(command: Any, ctx: Any) -> Any:
    """`command` with no value placeholder in the help of its flags: typer's help shows
    every option's type, `<bool>` for a flag too, as if it took a value (`--json <bool>`);
    a flag takes none. An empty metavar is what typer shows instead of the type."""
    for param in command.get_params(ctx):
        if (getattr(param, "is_flag", False) or getattr(param, "count", False)) and (
            param.metavar is None
        ):
            param.metavar = ""
    return command


class LedgerGroup(TyperGroup):
    """A command group that turns every `LedgerError` (and OS errors such as a full disk)
    raised by its commands into the error line and exit status of `ledger.errors`, so no
    command needs its own handler and none shows a traceback for a known failure. The
    help of its commands and its own shows flags without a value placeholder."""

    def invoke(self, ctx: typer.Context) -> Any:  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except (LedgerError, OSError) as exc:
            raise typer.Exit(failed(exc)) from None

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        command = super().get_command(ctx, cmd_name)
        return None if command is None else without_flag_placeholders(command, ctx)

    def format_help(self, ctx: Any, formatter: Any) -> None:
        without_flag_placeholders(self, ctx)
        super().format_help(ctx, formatter)


def command_group(
    help: str, cls: type[LedgerGroup] = LedgerGroup, *, completion: bool = False
) -> typer.Typer:
    """A command group. `completion`: it offers `--install-completion` and
    `--show-completion`, which complete every command under it: the root only."""
    return typer.Typer(
        cls=cls,
        help=help,
        no_args_is_help=True,
        add_completion=completion,
        pretty_exceptions_enable=False,
        # Markdown reflows the docstrings' paragraphs to the terminal's width (Rich mode
        # keeps their source line breaks, which then wrap a second time).
        rich_markup_mode="markdown",
    )


# --- files the user names for output ------------------------------------------------------
# The OS's own message names the file it was opening (a partial file beside the target,
# say) in Python's `[Errno 2] ...` form; these name the path the user gave and what is wrong.


def _os_reason(path: Path, exc: OSError) -> str:
    if exc.errno == errno.ENOENT:
        return f"directory {path.parent} does not exist"
    if exc.errno == errno.ENOTDIR:
        return f"{path.parent} is not a directory"
    if exc.errno == errno.EISDIR:
        return "it is a directory"
    text = exc.strerror or type(exc).__name__
    return text[:1].lower() + text[1:]


def check_output(path: Path) -> None:
    """Refuses, in one line naming `path`, an output file that cannot be created where the
    user put it: before a command spends minutes on what it would write there."""
    parent = path.parent
    if path.is_dir():
        raise LedgerError(f"cannot write {path}: it is a directory")
    if not parent.exists():
        raise LedgerError(f"cannot write {path}: directory {parent} does not exist")
    if not parent.is_dir():
        raise LedgerError(f"cannot write {path}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise LedgerError(f"cannot write {path}: permission denied in {parent}")


@contextmanager
def writing(path: Path) -> Iterator[None]:
    """OS errors while writing `path` (or a file beside it that becomes it) as one line
    naming `path`: a full disk, a directory removed meanwhile, permissions."""
    try:
        yield
    except BrokenPipeError:
        raise
    except OSError as exc:
        raise LedgerError(f"cannot write {path}: {_os_reason(path, exc)}") from None


# --- standard input and output as event streams -----------------------------------------

STDIO = "-"  # a file argument naming standard input or output, as kcat and tar take it

FormatOption = Annotated[
    str | None,
    typer.Option(
        "--format",
        help="jsonl or avro: the format of standard input or output given as -. A file's "
        "format comes from its name (.jsonl, .avro).",
        show_default=False,
    ),
]


def event_format(target: str, fmt: str | None) -> str:
    """The event format of `target` (a file name, or - for standard input or output): its
    suffix, or `--format` for -, which has no name to tell it by. A usage error when it
    cannot be known or the two disagree."""
    from ledger.sources.files import FORMATS

    if fmt is not None and fmt not in FORMATS:
        raise UsageError(f"--format {quote(fmt)}: expected jsonl or avro")
    if target == STDIO:
        if fmt is None:
            raise UsageError("- is standard input or output: give --format jsonl or --format avro")
        return fmt
    suffix = Path(target).suffix
    named = suffix.removeprefix(".")
    if named not in FORMATS:
        raise UsageError(
            f"{target}: unknown file type {suffix!r} (use .jsonl or .avro, or - with --format)"
        )
    if fmt is not None and fmt != named:
        raise UsageError(f"{target}: --format {fmt} but the file name says {named}")
    return named


@contextmanager
def event_files(files: Sequence[Path], fmt: str | None) -> Iterator[list[Path]]:
    """The event files named, checked, with standard input (-) in its place spooled to a
    temporary file (`ledger.sources.files.spool`), removed afterwards. The files are
    checked before standard input is read, so a mistyped name fails at once."""
    from ledger.sources.files import check_paths, spool

    names = [str(f) for f in files]
    if names.count(STDIO) > 1:
        raise UsageError("- (standard input) can be read only once")
    check_paths([f for f, name in zip(files, names, strict=True) if name != STDIO])
    if STDIO not in names:
        if fmt is not None:
            raise UsageError(
                "--format is the format of standard input (-); a file's comes from its name"
            )
        yield list(files)
        return
    chosen = event_format(STDIO, fmt)
    with tempfile.TemporaryDirectory(prefix="ledger-stdin-") as tmp:
        spooled = spool(sys.stdin.buffer, Path(tmp), chosen)
        yield [spooled if name == STDIO else f for f, name in zip(files, names, strict=True)]


# --- options ----------------------------------------------------------------------------


def typer_option(option: Option) -> Any:
    """An option declared in `ledger.cli.options`, as typer's `typer.Option(...)`."""
    if option.is_flag:
        return typer.Option(option.name, help=option.help)
    # Not given is None, which the help explains ("default: now"): nothing for typer to show.
    return typer.Option(option.name, help=option.help, show_default=False)


def typer_parameter(declared: Argument | Option) -> Any:
    """A parameter declared in `ledger.cli.options`, as typer's `Annotated[type, ...]`."""
    if isinstance(declared, Argument):
        return Annotated[str, typer.Argument(help=declared.help)]
    return Annotated[bool if declared.is_flag else str | None, typer_option(declared)]


# Every command's --db and --json: those of `ledger current|history|explain`. Spelled as
# `typer_parameter` makes them, for type checkers (tests/e2e/test_cli_parsing.py holds
# every command's --db and --json to the declarations).
DbOption = Annotated[str | None, typer_option(DB)]
JsonOption = Annotated[bool, typer_option(JSON)]
BootstrapOption = Annotated[
    str | None,
    typer.Option(
        "--bootstrap",
        help="Kafka bootstrap servers, host:port[,host:port] (default: $LEDGER_BOOTSTRAP). "
        "SASL/TLS settings come from LEDGER_KAFKA_* variables (see docs/kafka.md).",
        show_default=False,
    ),
]
TopicOption = Annotated[
    str | None,
    typer.Option(
        "--topic",
        help="The event topic (default: $LEDGER_TOPIC, else account-events).",
        show_default=False,
    ),
]


ResetPositionsOption = Annotated[
    bool,
    typer.Option(
        "--reset-positions",
        help="Forget the positions stored for the topic first and read it from the beginning: "
        "after the topic was recreated or truncated (the command stops and says so). Events "
        "applied before are recognised by event id.",
    ),
]


@contextmanager
def kafka_errors(bootstrap: str | None) -> Iterator[None]:
    """kafka-python's errors as one line naming the cluster."""
    from kafka.errors import KafkaError, UnsupportedCodecError

    from ledger.sources.kafka import KafkaSourceError, codec_error

    try:
        yield
    except KafkaSourceError as exc:
        raise LedgerError(f"Kafka at {bootstrap}: {exc}") from None
    except UnsupportedCodecError as exc:
        # Raised by every poll until the package is there: stop once, saying which.
        raise LedgerError(f"Kafka at {bootstrap}: {codec_error(exc)}") from None
    except KafkaError as exc:
        reason = str(exc) or type(exc).__name__
        if "Unable to bootstrap" in reason or "NoBrokersAvailable" in reason:
            raise LedgerError(f"cannot reach Kafka at {bootstrap} (no broker answered)") from None
        raise LedgerError(f"Kafka at {bootstrap}: {reason}") from None


# --- wiring -----------------------------------------------------------------------------


def open_store(s: Settings) -> Any:
    """The SQL store named by the settings, migrated to the newest schema."""
    from ledger.store.database import open_engine
    from ledger.store.sql import SqlStore

    return SqlStore(
        open_engine(s.db_url),
        dead_letter_raw_bytes=s.limits.dead_letter_raw_bytes,
        retain_assignments=s.retain_assignments,
    )


def store_opener(s: Settings) -> Any:
    """What a parallel replay's worker processes open the same store with (picklable)."""
    from functools import partial

    from ledger.store.sql import open_sql_store

    return partial(open_sql_store, s.db_url, s.limits.dead_letter_raw_bytes)


WorkersOption = Annotated[
    int | None,
    typer.Option(
        "--workers",
        min=0,
        max=999,
        help="Processes that decode and plan the batches, each for its share of the users, "
        "while this process reads and writes; 0 plans here, as a file replay does for files "
        "under $LEDGER_PARALLEL_MIN_MB (default 4). The result is the same for any number.  "
        "[default: $LEDGER_WORKERS, else 2]",
        show_default=False,
    ),
]


# What "policy files given" means to every command that takes them (replay, dead-letters
# retry, verify, impact, policy check|test): laid over the shipped set.
POLICIES_HELP = (
    "A policy file, or a directory of *.toml, laid over the shipped policies (repeat for "
    "more): a new version is added, a file with a shipped version replaces it."
)

PoliciesOption = Annotated[
    list[Path] | None,
    typer.Option(
        "--policies",
        help=f"{POLICIES_HELP} Every writer of a store must use the same policies, and a "
        "version the store has decided with must keep its content (publish a change as a "
        "new version).",
        show_default=False,
    ),
]


def policy_set(paths: Sequence[Path] | None) -> Any:
    """The `PolicySet` of `--policies` paths laid over the shipped policies (none: the
    shipped ones); PolicyError listing every problem, PolicyPathError for a missing path."""
    from ledger.codecs.policy_files import load_policies, load_policy_paths

    if not paths:
        return load_policies()
    return load_policy_paths(paths).require()


def projector(s: Settings, policies: Sequence[Path] | None = None) -> Any:
    """A projector over the configured store, with the shipped policies and the files
    `policies` names laid over them (`policy_set`)."""
    from ledger.app.ingest.projector import Projector

    rules = policy_set(policies)  # before the store is opened: a bad file creates nothing
    return Projector(
        open_store(s),
        rules,
        s.phone_key,
        cache_users=s.cache_users,
        cache_bytes=s.cache_mb << 20,
        parse_workers=s.parse_workers,
    )


def tune_gc_for_streaming() -> None:
    """Long replays keep many small long-lived objects (cached users); CPython's default
    gen-0 threshold of 700 makes the collector rescan them constantly (measured: replay
    30% slower). Nothing in the ledger relies on prompt cyclic collection."""
    gc.set_threshold(200_000, 50, 1000)


# --- progress ---------------------------------------------------------------------------


def file_progress(
    paths: Sequence[Path],
) -> tuple[AbstractContextManager[Any], Callable[[Path, int, int], None] | None]:
    """A progress bar over the files' bytes on a terminal; nothing when piped."""
    if not err.is_terminal:
        return nullcontext(), None
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TextColumn("{task.fields[events]:,} events"),
        TimeRemainingColumn(),
        console=err,
        transient=False,
    )
    tasks = {p: progress.add_task(p.name, total=p.stat().st_size, events=0) for p in paths}

    def hook(path: Path, done: int, n: int) -> None:
        task = tasks[path]
        events = progress.tasks[task].fields["events"] + n
        progress.update(task, completed=done, events=events)

    return progress, hook


def count_progress(
    total: int | None, label: str
) -> tuple[AbstractContextManager[Any], Callable[[int], None]]:
    """A running event count on a terminal; nothing when piped."""
    if not err.is_terminal:
        return nullcontext(), lambda n: None
    progress = Progress(
        TextColumn(f"[bold]{label}"),
        BarColumn(),
        TextColumn("{task.completed:,} events"),
        TimeRemainingColumn(),
        console=err,
    )
    task = progress.add_task(label, total=total)
    return progress, lambda n: progress.advance(task, n)


@contextmanager
def reading_topic(s: Settings, label: str) -> Iterator[tuple[Any, Callable[[int], None]]]:
    """A consumer on the configured cluster and a running count of what it read (on a
    terminal), for commands that read a topic to its end; Kafka's errors as one line."""
    from ledger.sources.kafka import make_consumer

    with kafka_errors(s.kafka.require_bootstrap()):
        consumer = make_consumer(s.kafka)
        shown, advance = count_progress(None, label)
        try:
            with shown:
                yield consumer, advance
        finally:
            consumer.close()
