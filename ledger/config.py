"""The ledger's settings, built once at the entry point from flags and the environment and
passed down. This is the only module that reads the environment.

| variable | setting |
|---|---|
| `LEDGER_DB` | `Settings.db_url` (default `sqlite:///ledger.db`) |
| `LEDGER_PHONE_KEY` | `Settings.phone_key` (default: a public development key) |
| `LEDGER_BOOTSTRAP` | `KafkaSettings.bootstrap`, host:port[,host:port...] |
| `LEDGER_TOPIC` | `KafkaSettings.topic` (default `account-events`) |
| `LEDGER_CHANGES_TOPIC` | `KafkaSettings.changes_topic`: the changefeed (`rulebook-changes`) |
| `LEDGER_CURRENT_TOPIC` | `KafkaSettings.current_topic`: its table view (`rulebook-current`) |
| `LEDGER_KAFKA_BOOTSTRAP_TIMEOUT_MS` | `KafkaSettings.bootstrap_timeout_ms` (default 10000) |
| `LEDGER_KAFKA_*` | kafka-python client options (`KAFKA_ENV` below): SASL, TLS, client id |
| `LEDGER_KAFKA_ISOLATION_LEVEL` | `KafkaSettings.isolation_level`: `read_committed` (default) |
| `LEDGER_KAFKA_FRAME_MB` | `KafkaSettings.frame_mb`: the largest fetch response read, MiB (95) |
| `LEDGER_API_TOKENS` | `ApiSettings.tokens`: `role:token` pairs, comma separated (`serve`) |
| `LEDGER_API_TOKENS_FILE` | `ApiSettings.tokens_file`: a file of `role:token` lines |
| `LEDGER_API_METRICS` | `ApiSettings.metrics_access`: `token` (default) or `open` for `/metrics` |
| `LEDGER_PARSE_WORKERS` | `Settings.parse_workers`: processes that parse phones ahead (default 1) |
| `LEDGER_WORKERS` | `Settings.workers`: processes that plan a replay's or consumer's batches (2) |
| `LEDGER_PARALLEL_MIN_MB` | `Settings.parallel_min_mb`: smaller files planned by the writer (4) |
| `LEDGER_BATCH_MB` | `Settings.batch_mb`: a batch ends once its records hold this many MiB (8) |
| `LEDGER_CACHE_MB` | `Settings.cache_mb`: the writer's user cache, in estimated MB (default 128) |
| `LEDGER_RETAIN_ASSIGNMENTS` | `Settings.retain_assignments`: `1` keeps an erased user's skeleton |
| `LEDGER_AUDIT_KEY` | `Settings.audit_key`: signs and checks digests (HMAC-SHA256); unset |

A flag given on the command line wins over the variable; an empty variable counts as unset.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from ledger.domain.limits import quote
from ledger.errors import UsageError

DEFAULT_DB = "sqlite:///ledger.db"
DEFAULT_TOPIC = "account-events"
DEFAULT_CHANGES_TOPIC = "rulebook-changes"
DEFAULT_CURRENT_TOPIC = "rulebook-current"
DLQ_SUFFIX = ".dlq"
# Public on purpose: it only keeps development databases working. Real deployments set
# LEDGER_PHONE_KEY, or anyone can reverse the stored phone hashes by enumeration.
DEV_PHONE_KEY = b"jurisdiction-ledger-development-key"

# env var -> kafka-python keyword argument
KAFKA_ENV: Mapping[str, str] = {
    "LEDGER_KAFKA_SECURITY_PROTOCOL": "security_protocol",
    "LEDGER_KAFKA_SASL_MECHANISM": "sasl_mechanism",
    "LEDGER_KAFKA_SASL_USERNAME": "sasl_plain_username",
    "LEDGER_KAFKA_SASL_PASSWORD": "sasl_plain_password",
    "LEDGER_KAFKA_SSL_CAFILE": "ssl_cafile",
    "LEDGER_KAFKA_SSL_CERTFILE": "ssl_certfile",
    "LEDGER_KAFKA_SSL_KEYFILE": "ssl_keyfile",
    "LEDGER_KAFKA_SSL_PASSWORD": "ssl_password",
    "LEDGER_KAFKA_SSL_CHECK_HOSTNAME": "ssl_check_hostname",
    "LEDGER_KAFKA_CLIENT_ID": "client_id",
}
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
# Readers skip the records of aborted transactions, and of open ones until they commit:
# otherwise an event a producer took back would be applied for good.
ISOLATION_LEVELS = ("read_committed", "read_uncommitted")
# The record-batch codecs Kafka defines, as `ledger publish --compression` names them.
COMPRESSION_TYPES = ("none", "gzip", "snappy", "lz4", "zstd")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def dlq_topic(topic: str) -> str:
    """The dead-letter topic that belongs to an event topic."""
    return f"{topic}{DLQ_SUFFIX}"


@dataclass(frozen=True)
class KafkaSettings:
    bootstrap: str | None = None
    topic: str = DEFAULT_TOPIC
    # The changefeed's topics (`ledger changefeed`, `ledger consume --changefeed`).
    changes_topic: str = DEFAULT_CHANGES_TOPIC
    current_topic: str = DEFAULT_CURRENT_TOPIC
    # The LEDGER_KAFKA_* variables as given: parsed only by the commands that talk to Kafka,
    # so a typo there does not stop `ledger history`.
    client_env: Mapping[str, str] = field(default_factory=dict)
    # An unreachable cluster is reported after this long instead of kafka-python's 30 s.
    bootstrap_timeout_ms: int = 10_000
    # How long `replay --from-kafka` and `export` wait for the broker to report the end.
    watermark_timeout_s: float = 30.0
    # LEDGER_KAFKA_ISOLATION_LEVEL as given: checked by `isolation` when a reader is made,
    # like the other LEDGER_KAFKA_* variables.
    isolation_level: str = ISOLATION_LEVELS[0]
    # The largest fetch response a reader accepts (kafka-python's receive_message_max_bytes,
    # about its default of 100 MB). A record batch larger than this cannot be fetched at
    # all: it is dead-lettered by position (`ledger.sources.kafka_frames`).
    frame_mb: int = 95

    @property
    def fetch_sizes(self) -> dict[str, int]:
        """kafka-python's fetch sizes for a reader, within `frame_mb`."""
        frame = max(2, self.frame_mb) << 20
        return {
            "receive_message_max_bytes": frame,
            "fetch_max_bytes": min(50 << 20, frame - (1 << 20)),
            "max_partition_fetch_bytes": 1 << 20,
        }

    @property
    def dlq_topic(self) -> str:
        return dlq_topic(self.topic)

    @property
    def client(self) -> dict[str, Any]:
        """kafka-python keyword arguments (SASL, TLS, client id)."""
        return kafka_client_settings(self.client_env)

    @property
    def isolation(self) -> str:
        """kafka-python's `isolation_level` for every reader of the topic."""
        level = self.isolation_level.strip().lower()
        if level not in ISOLATION_LEVELS:
            raise UsageError(
                f"LEDGER_KAFKA_ISOLATION_LEVEL={quote(self.isolation_level)} is not one of "
                f"{', '.join(ISOLATION_LEVELS)}"
            )
        return level

    def require_bootstrap(self) -> str:
        if not self.bootstrap:
            raise UsageError(
                "no Kafka bootstrap servers: pass --bootstrap HOST:PORT or set LEDGER_BOOTSTRAP"
            )
        return self.bootstrap


@dataclass(frozen=True)
class ConsumerSettings:
    """The projector service's consumer-group behaviour."""

    group: str = "ledger-projector"
    batch_size: int = 2000
    poll_timeout_ms: int = 500
    log_every_s: float = 10.0
    # Join time on a rebalance is about half the session timeout; 6000 ms is the lowest
    # Apache Kafka accepts by default.
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 1_000
    max_poll_interval_ms: int = 60_000
    max_backoff_s: float = 30.0


@dataclass(frozen=True)
class ByteLimits:
    """Bounds on input, checked before a record reaches a batch: a record over them is
    dead-lettered with the limit it broke, never loaded whole."""

    event_bytes: int = 1 << 20  # one JSON line, Avro record or Kafka message
    # Dead letters keep this much of the raw input (and its full size), so one huge
    # record cannot fill the table or a terminal; above event_bytes, so the input of a
    # record refused for its size is still kept whole up to this.
    dead_letter_raw_bytes: int = 4 << 20
    # One block of an Avro container, as stored and once decompressed: a forged block
    # length or a deflate bomb ends the file's reading as corrupt instead of filling memory.
    # Writers cut blocks at 16 KB (fastavro) to 64 KB (Java) by default.
    avro_block_bytes: int = 64 << 20


API_ROLES = ("metrics", "auditor", "admin")  # each role may do what the ones before it may
METRICS_ACCESS = ("token", "open")


@dataclass(frozen=True)
class ApiSettings:
    """Who may ask `ledger serve` what. Tokens are `role:token` pairs; the file (read by the
    server at start, so the secret need not sit in the environment) adds to the variable."""

    tokens: str | None = None
    tokens_file: str | None = None
    metrics_access: str = "token"  # "open": /metrics answers without a token

    @property
    def configured(self) -> bool:
        return bool(self.tokens or self.tokens_file)

    def check(self) -> None:
        if self.metrics_access not in METRICS_ACCESS:
            raise UsageError(
                f"metrics access {self.metrics_access!r} (LEDGER_API_METRICS or "
                f"--metrics-access) must be one of {', '.join(METRICS_ACCESS)}"
            )


def parse_api_tokens(text: str, origin: str, *, numbered: bool = False) -> dict[str, str]:
    """token -> role from `role:token` items separated by commas or line breaks; `#` starts
    a comment. Raises UsageError naming `origin` (with the line number when `numbered`),
    never the token, on a malformed item."""
    found: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        for item in line.split("#", 1)[0].split(","):
            item = item.strip()
            if not item:
                continue
            role, sep, token = item.partition(":")
            role, token = role.strip(), token.strip()
            where = f"{origin} line {n}" if numbered else origin
            if not sep or role not in API_ROLES:
                raise UsageError(
                    f"{where}: expected ROLE:TOKEN with ROLE one of {', '.join(API_ROLES)}"
                )
            # Short tokens can be guessed; printable ASCII keeps them header-safe.
            if len(token) < 16 or not all(33 <= ord(c) < 127 for c in token):
                raise UsageError(
                    f"{where}: {role} tokens must be at least 16 printable ASCII characters "
                    "without spaces"
                )
            if found.get(token, role) != role:
                raise UsageError(f"{where}: one token is given two roles")
            found[token] = role
    return found


@dataclass(frozen=True)
class Settings:
    db_url: str = DEFAULT_DB
    phone_key: bytes = DEV_PHONE_KEY
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    consumer: ConsumerSettings = field(default_factory=ConsumerSettings)
    limits: ByteLimits = field(default_factory=ByteLimits)
    api: ApiSettings = field(default_factory=ApiSettings)
    batch_size: int = 5000  # events per transaction of a replay
    cache_users: int = 50_000  # users whose projections a writer keeps between batches
    cache_mb: int = 128  # ... and the memory they may take (estimated, MiB)
    # Processes parsing the next batch's phone numbers while a replay applies this one
    # (0: parse in the writer).
    parse_workers: int = 1
    # Processes planning a replay's or a consumer's batches, each for its share of the
    # users, while the reader's own process only reads and writes (0: plan in the writer,
    # with `parse_workers`).
    workers: int = 2
    # ... for files of at least this size: on a smaller one, starting them costs more than
    # they save.
    parallel_min_mb: int = 4
    # A batch ends at its record count or once its records hold this much input, so that a
    # stream of large records cannot make one batch's memory the record limit times the count.
    batch_mb: int = 8
    # Signs `ledger digest` documents (HMAC-SHA256) and checks them in `ledger verify`.
    audit_key: bytes | None = None
    # LEDGER_RETAIN_ASSIGNMENTS=1: an erasure keeps the user's history skeleton.
    retain_assignments: bool = False

    @property
    def batch_bytes(self) -> int:
        return self.batch_mb << 20

    @property
    def uses_dev_phone_key(self) -> bool:
        """True when phone hashes would be keyed by the public development key, which
        anyone can use to reverse them by enumerating phone numbers."""
        return self.phone_key == DEV_PHONE_KEY

    def with_overrides(self, **flags: Any) -> Settings:
        """Flags given on a command line (None = not given) over these settings; Kafka,
        consumer and API flags are named `kafka_<field>`, `consumer_<field>`, `api_<field>`."""
        top: dict[str, Any] = {}
        kafka: dict[str, Any] = {}
        consumer: dict[str, Any] = {}
        api: dict[str, Any] = {}
        for name, value in flags.items():
            if value is None:
                continue
            if name.startswith("api_"):
                api[name.removeprefix("api_")] = value
            elif name.startswith("kafka_"):
                kafka[name.removeprefix("kafka_")] = value
            elif name.startswith("consumer_"):
                consumer[name.removeprefix("consumer_")] = value
            else:
                top[name] = value
        return replace(
            self,
            kafka=replace(self.kafka, **kafka),
            consumer=replace(self.consumer, **consumer),
            api=replace(self.api, **api),
            **top,
        )


def _env(environ: Mapping[str, str], name: str) -> str | None:
    value = environ.get(name, "").strip()
    return value or None


def kafka_client_settings(environ: Mapping[str, str]) -> dict[str, Any]:
    """kafka-python keyword arguments from the `LEDGER_KAFKA_*` variables.

    Raises UsageError on a value kafka-python would only reject later and less clearly.
    """
    settings: dict[str, Any] = {}
    for var, kwarg in KAFKA_ENV.items():
        raw = _env(environ, var)
        if raw is None:
            continue
        if kwarg == "security_protocol":
            value: Any = raw.upper()
            if value not in SECURITY_PROTOCOLS:
                raise UsageError(f"{var}={raw!r} is not one of {', '.join(SECURITY_PROTOCOLS)}")
        elif kwarg == "sasl_mechanism":
            value = raw.upper()
        elif kwarg == "ssl_check_hostname":
            lowered = raw.lower()
            if lowered not in _TRUE | _FALSE:
                raise UsageError(f"{var}={raw!r} must be true or false")
            value = lowered in _TRUE
        else:
            value = raw
        settings[kwarg] = value
    # Credentials without a SASL protocol would be silently ignored by kafka-python.
    protocol = settings.get("security_protocol", "PLAINTEXT")
    if "sasl_mechanism" in settings and not protocol.startswith("SASL_"):
        raise UsageError(
            "LEDGER_KAFKA_SASL_MECHANISM needs LEDGER_KAFKA_SECURITY_PROTOCOL="
            "SASL_PLAINTEXT or SASL_SSL"
        )
    return settings


def _frame_mb(environ: Mapping[str, str]) -> int:
    value = _positive_int(environ, "LEDGER_KAFKA_FRAME_MB", KafkaSettings.frame_mb)
    if not 2 <= value <= 2047:  # a response holds at least 1 MiB of one partition, plus room
        raise UsageError(f"LEDGER_KAFKA_FRAME_MB={value} must be from 2 to 2047")
    return value


def _positive_int(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = _env(environ, name)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit()) or int(raw) == 0:
        raise UsageError(f"{name}={raw!r} must be a positive whole number")
    return int(raw)


def settings_from_env(environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from the environment (defaults where a variable is unset)."""
    env = os.environ if environ is None else environ
    key = _env(env, "LEDGER_PHONE_KEY")
    return Settings(
        db_url=_env(env, "LEDGER_DB") or DEFAULT_DB,
        phone_key=_key_bytes("LEDGER_PHONE_KEY", key) if key else DEV_PHONE_KEY,
        kafka=KafkaSettings(
            bootstrap=_env(env, "LEDGER_BOOTSTRAP"),
            topic=_env(env, "LEDGER_TOPIC") or DEFAULT_TOPIC,
            changes_topic=_env(env, "LEDGER_CHANGES_TOPIC") or DEFAULT_CHANGES_TOPIC,
            current_topic=_env(env, "LEDGER_CURRENT_TOPIC") or DEFAULT_CURRENT_TOPIC,
            client_env={k: v for k, v in env.items() if k in KAFKA_ENV},
            bootstrap_timeout_ms=_positive_int(
                env, "LEDGER_KAFKA_BOOTSTRAP_TIMEOUT_MS", KafkaSettings.bootstrap_timeout_ms
            ),
            isolation_level=(
                _env(env, "LEDGER_KAFKA_ISOLATION_LEVEL") or KafkaSettings.isolation_level
            ),
            frame_mb=_frame_mb(env),
        ),
        api=_api_settings(env),
        parse_workers=_count(env, "LEDGER_PARSE_WORKERS", Settings.parse_workers),
        workers=_count(env, "LEDGER_WORKERS", Settings.workers),
        parallel_min_mb=_count(env, "LEDGER_PARALLEL_MIN_MB", Settings.parallel_min_mb),
        batch_mb=_positive_int(env, "LEDGER_BATCH_MB", Settings.batch_mb),
        cache_mb=_positive_int(env, "LEDGER_CACHE_MB", Settings.cache_mb),
        audit_key=(
            _key_bytes("LEDGER_AUDIT_KEY", audit)
            if (audit := _env(env, "LEDGER_AUDIT_KEY"))
            else None
        ),
        retain_assignments=retain_assignments(env),
    )


def _key_bytes(name: str, value: str) -> bytes:
    # surrogateescape: a variable holding bytes that are not UTF-8 is kept as those bytes
    # (os.environ decodes them so); any other lone surrogate cannot come from a process's
    # environment but is refused all the same.
    try:
        return value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raise UsageError(f"{name} holds text that is not a key (a lone surrogate)") from None


def _count(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = _env(environ, name)
    if raw is None:
        return default
    # isascii: "¹" and other Unicode digits pass isdigit() but are no number int() takes.
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 3:
        raise UsageError(f"{name}={raw!r} must be a whole number from 0 to 999")
    return int(raw)


def _api_settings(env: Mapping[str, str]) -> ApiSettings:
    # Kept as given and checked by `ledger serve` (`ApiSettings.check`), so a typo here
    # does not stop `ledger history`.
    return ApiSettings(
        tokens=_env(env, "LEDGER_API_TOKENS"),
        tokens_file=_env(env, "LEDGER_API_TOKENS_FILE"),
        metrics_access=(_env(env, "LEDGER_API_METRICS") or "token").lower(),
    )


def retain_assignments(environ: Mapping[str, str] | None = None) -> bool:
    """LEDGER_RETAIN_ASSIGNMENTS: `1` when the operator must keep an erased user's history
    skeleton for legal retention (docs/data-protection.md); unset, empty or `0` otherwise.
    Anything else is refused: a typo must not decide what an erasure deletes."""
    value = (os.environ if environ is None else environ).get("LEDGER_RETAIN_ASSIGNMENTS", "")
    if value in ("", "0"):
        return False
    if value == "1":
        return True
    raise UsageError(
        f"LEDGER_RETAIN_ASSIGNMENTS={quote(value)} is not 0 or 1 (1 keeps an erased user's "
        "history skeleton)"
    )
