"""Typed settings, read once from `FOTOOWL_*` environment variables and validated at start."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

PREFIX = "FOTOOWL_"
DEFAULT_DRIVE_API_URL = "https://www.googleapis.com/drive/v3"
DEFAULT_DROPBOX_API_URL = "https://api.dropboxapi.com"
DEFAULT_DROPBOX_CONTENT_URL = "https://content.dropboxapi.com"


class ConfigError(ValueError):
    """A setting has a value fotoowl cannot use; the message names the variable."""


class Secret:
    """A string that never shows itself in `repr`, `str` or logs."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __repr__(self) -> str:
        return "Secret('**********')" if self._value else "Secret('')"

    __str__ = __repr__


@dataclass(frozen=True)
class AppSettings:
    # Empty URLs mean "not configured": `fotoowl dev` then starts embedded servers.
    database_url: str = ""
    redis_url: str = ""
    storage: Literal["s3", "file"] = "s3"
    s3_endpoint_url: str = ""
    s3_bucket: str = "fotoowl"
    s3_prefix: str = "images/"
    s3_region: str = "us-east-1"
    aws_access_key_id: str = ""
    aws_secret_access_key: Secret = field(default_factory=lambda: Secret(""))
    file_root: Path = Path(".fotoowl/files")
    google_api_key: Secret = field(default_factory=lambda: Secret(""))
    drive_api_url: str = DEFAULT_DRIVE_API_URL
    # How Drive folders are read: "api" needs FOTOOWL_GOOGLE_API_KEY (sizes, MD5 checks, faster);
    # "public_page" reads them as a browser does, with no key; "auto" uses the API when a key is set.
    drive_reader: Literal["auto", "api", "public_page"] = "auto"
    # Google throttles the keyless pages per client address: a low pace of their own, shared in Redis.
    drive_public_rate_per_s: float = 2.0
    drive_public_page_url: str = "https://drive.google.com"
    drive_public_download_url: str = "https://drive.usercontent.google.com"
    # A Dropbox app's key and secret: shared folders are read with app authentication, no user token.
    dropbox_app_key: str = ""
    dropbox_app_secret: Secret = field(default_factory=lambda: Secret(""))
    dropbox_api_url: str = DEFAULT_DROPBOX_API_URL
    dropbox_content_url: str = DEFAULT_DROPBOX_CONTENT_URL
    # Dropbox documents no number; rate-limit answers halve the pace as for Drive.
    dropbox_rate_per_s: float = 100.0
    host: str = "127.0.0.1"
    port: int = 8000
    api_token: Secret = field(default_factory=lambda: Secret(""))
    # Signs the HTML forms' tokens; empty: a random key kept in data_dir/secret-key.
    secret_key: Secret = field(default_factory=lambda: Secret(""))
    data_dir: Path = Path(".fotoowl")
    # Pipeline tuning.
    # Transfers are latency-bound (two Drive round trips a file): concurrency is what buys speed,
    # and transfer_memory_bytes, not the file count, is what bounds memory.
    files_in_flight: int = 32
    transfer_memory_bytes: int = 64 * 1024 * 1024
    part_size_bytes: int = 8 * 1024 * 1024
    chunk_size_bytes: int = 1024 * 1024
    batch_size: int = 200
    # A claim's lease; renewed every third of it while its copies run, so a claim nobody renews (its
    # job died) comes back within this long even when its worker process lives on.
    lease_s: int = 120
    max_attempts: int = 3
    # Listing a folder may fail this many times (Drive errors, unexpected ones) before the import fails.
    max_list_attempts: int = 5
    # Folders of one listing read at once: a tree of small folders lists in round trips per folder.
    listing_folders_at_once: int = 4
    retry_backoff_s: float = 2.0
    # Google's documented 12,000 queries per minute. A ceiling: each rate-limit answer halves the
    # pace, which then climbs back over a minute (pacer.py).
    drive_rate_per_s: float = 200.0
    drive_burst: int = 100
    drive_read_timeout_s: float = 60.0
    # Tries of one Drive request (backing off between them) before its file or listing attempt fails.
    drive_max_tries: int = 5
    job_timeout_s: int = 3600
    embedded_workers: bool = True
    # Each `fotoowl worker` process serves /metrics and /healthz here (on FOTOOWL_HOST); 0: none.
    worker_http_port: int = 9100
    # Image downloads answer with a redirect to a short-lived presigned S3 URL instead of streaming
    # through the app (only when browsers can reach the S3 endpoint).
    presign_downloads: bool = False
    thumbnail_px: int = 320
    # A file whose checksum and size match bytes already stored (any import, any source) is copied
    # inside storage instead of being downloaded again.
    dedupe: bool = True
    # Watches: the shortest interval a watch may ask for, and the longest a failing one waits.
    watch_min_interval_s: int = 2
    watch_max_backoff_s: int = 6 * 3600
    thumbnail_threads: int = 1
    # Worker processes (`fotoowl worker`, `arq fotoowl.worker.Settings`) make previews in a child at
    # the lowest CPU priority, on the cores their copies leave idle (pipeline/preview_process.py);
    # off, or in `fotoowl serve`'s embedded workers, on their own loop, a trickle while they copy.
    preview_process: bool = True
    # Originals handed from their copy to their preview on the same machine (pipeline/preview_spool.py),
    # so previews need not read them back from storage: a directory (empty: tmpfs at /dev/shm where
    # there is one, else data_dir/preview-spool) and the most it holds; 0 turns the hand-over off.
    preview_spool_dir: str = ""
    preview_spool_bytes: int = 256 * 1024 * 1024
    db_pool_size: int = 10
    log_format: Literal["auto", "json", "text"] = "auto"
    log_level: str = "INFO"
    # Webhooks: every event goes to this admin-set URL (trusted), and to an import's own callback_url.
    webhook_url: str = ""
    # Signs every delivery (X-Fotoowl-Signature); required as soon as any event can be sent.
    webhook_secret: Secret = field(default_factory=lambda: Secret(""))
    # A delivery is retried with exponential backoff from this base until the event is this old.
    webhook_backoff_s: float = 10.0
    webhook_give_up_s: float = 86400.0
    # Callback URLs are user input: off, they may not name loopback, private or link-local hosts.
    webhook_allow_private_hosts: bool = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> AppSettings:
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = env.get(PREFIX + f.name.upper())
            if raw is None and f.name == "google_api_key":
                raw = env.get("GOOGLE_API_KEY")
            if raw is None and f.name in ("aws_access_key_id", "aws_secret_access_key"):
                raw = env.get(f.name.upper())
            if raw is None and f.name == "s3_region":
                raw = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
            if raw is None:
                continue
            values[f.name] = _parse(f, raw.strip())
        values.update(overrides)
        settings = cls(**values)
        settings.validate()
        return settings

    def replace(self, **changes: Any) -> AppSettings:
        settings = dataclasses.replace(self, **changes)
        settings.validate()
        return settings

    def validate(self) -> None:
        if self.storage not in ("s3", "file"):
            raise ConfigError(f"{PREFIX}STORAGE must be 's3' or 'file', not {self.storage!r}")
        for name, schemes in (
            ("database_url", ("postgres", "postgresql")),
            ("redis_url", ("redis", "rediss", "unix")),
            ("s3_endpoint_url", ("http", "https")),
            ("drive_api_url", ("http", "https")),
            ("dropbox_api_url", ("http", "https")),
            ("drive_public_page_url", ("http", "https")),
            ("drive_public_download_url", ("http", "https")),
            ("dropbox_content_url", ("http", "https")),
            ("webhook_url", ("http", "https")),
        ):
            value = getattr(self, name)
            if value and urlsplit(value).scheme not in schemes:
                raise ConfigError(
                    f"{PREFIX}{name.upper()} must be a URL starting with "
                    f"{' or '.join(s + '://' for s in schemes)}, got {_redact_url(value)!r}"
                )
        if not 0 <= self.worker_http_port <= 65535:
            raise ConfigError(f"{PREFIX}WORKER_HTTP_PORT must be between 0 (none) and 65535")
        if not 1 <= self.port <= 65535:
            raise ConfigError(f"{PREFIX}PORT must be between 1 and 65535, not {self.port}")
        if self.storage == "s3" and not self.s3_bucket:
            raise ConfigError(f"{PREFIX}S3_BUCKET must be set when {PREFIX}STORAGE is 's3'")
        # S3 rejects parts under 5 MiB (except the last); 8 MiB keeps us clear of the limit.
        if self.part_size_bytes < 5 * 1024 * 1024:
            raise ConfigError(f"{PREFIX}PART_SIZE_BYTES must be at least 5 MiB (5242880)")
        for name in (
            "files_in_flight",
            "chunk_size_bytes",
            "batch_size",
            "lease_s",
            "max_attempts",
            "max_list_attempts",
            "listing_folders_at_once",
            "drive_max_tries",
            "drive_burst",
            "job_timeout_s",
            "db_pool_size",
            "thumbnail_threads",
            "transfer_memory_bytes",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{PREFIX}{name.upper()} must be at least 1")
        if self.preview_spool_bytes < 0:
            raise ConfigError(f"{PREFIX}PREVIEW_SPOOL_BYTES must not be negative (0 turns the spool off)")
        if self.retry_backoff_s < 0:
            raise ConfigError(f"{PREFIX}RETRY_BACKOFF_S must not be negative")
        if self.drive_rate_per_s <= 0:
            raise ConfigError(f"{PREFIX}DRIVE_RATE_PER_S must be greater than 0")
        if self.drive_reader not in ("auto", "api", "public_page"):
            raise ConfigError(f"{PREFIX}DRIVE_READER must be auto, api or public_page")
        if self.log_format not in ("auto", "json", "text"):
            raise ConfigError(f"{PREFIX}LOG_FORMAT must be auto, json or text")
        # Unsigned events could be forged by anyone who finds the receiver: no URL without a secret.
        if self.webhook_url and not self.webhook_secret:
            raise ConfigError(f"{PREFIX}WEBHOOK_SECRET must be set when {PREFIX}WEBHOOK_URL is")
        if self.webhook_backoff_s <= 0 or self.webhook_give_up_s <= 0:
            raise ConfigError(f"{PREFIX}WEBHOOK_BACKOFF_S and {PREFIX}WEBHOOK_GIVE_UP_S must be greater than 0")

    def drive_reader_in_use(self) -> Literal["api", "public_page"]:
        """The reader new Drive imports get: "auto" means the API when there is a key (or a test
        or demo API address), the public pages otherwise."""
        if self.drive_reader != "auto":
            return self.drive_reader
        has_api = bool(self.google_api_key) or self.drive_api_url != DEFAULT_DRIVE_API_URL
        return "api" if has_api else "public_page"

    @property
    def s3_prefix_normalised(self) -> str:
        prefix = self.s3_prefix.strip("/")
        return prefix + "/" if prefix else ""


def _parse(f: dataclasses.Field[Any], raw: str) -> Any:
    name = PREFIX + f.name.upper()
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    try:
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind == "bool":
            lowered = raw.lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(raw)
        if kind == "Path":
            return Path(raw)
        if kind == "Secret":
            return Secret(raw)
    except ValueError:
        raise ConfigError(f"{name} has an invalid value for a {kind}: {raw!r}") from None
    return raw


def _redact_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        return url.replace(parts.password, "****", 1)
    return url
