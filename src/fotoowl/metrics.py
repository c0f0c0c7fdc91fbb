"""Prometheus metrics shared by the web process and the workers.

Module-level collectors on the default registry: one set per process, which is what a
Prometheus scrape of that process expects.
"""

from prometheus_client import REGISTRY, Counter, Gauge, Histogram

DRIVE_REQUESTS = Counter(
    "fotoowl_drive_requests_total",
    "Requests sent to the Google Drive API, by kind and HTTP status (or 'error' for a transport failure).",
    ["kind", "status"],
)
DRIVE_RETRIES = Counter(
    "fotoowl_drive_retries_total",
    "Drive requests retried after a transient failure, by reason.",
    ["reason"],
)
DROPBOX_REQUESTS = Counter(
    "fotoowl_dropbox_requests_total",
    "Requests sent to the Dropbox API, by kind and HTTP status (or 'error' for a transport failure).",
    ["kind", "status"],
)
DROPBOX_RETRIES = Counter(
    "fotoowl_dropbox_retries_total",
    "Dropbox requests retried after a transient failure, by reason.",
    ["reason"],
)
FILES = Counter(
    "fotoowl_files_total",
    "Files handled by the import pipeline, by outcome (imported, skipped, failed) and reason.",
    ["outcome", "reason"],
)
BYTES_TRANSFERRED = Counter(
    "fotoowl_bytes_transferred_total",
    "Bytes copied from Drive into storage.",
)
TRANSFER_SECONDS = Histogram(
    "fotoowl_transfer_duration_seconds",
    "Time to copy one file from Drive into storage.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
PREVIEW_ORIGINALS = Counter(
    "fotoowl_preview_originals_total",
    "Originals read to make a preview, by where from: this machine's preview spool, or storage (the spool "
    "had no room, or the copy ran on another machine).",
    ["read_from"],
)
QUEUE_DEPTH = Gauge(
    "fotoowl_queue_depth",
    "Jobs waiting in the arq queue, sampled at scrape time.",
)
IMPORTS = Gauge(
    "fotoowl_imports",
    "Imports by status, sampled from PostgreSQL at scrape time.",
    ["status"],
)


def preview_originals_read() -> dict[str, int]:
    """This process's PREVIEW_ORIGINALS so far, by where from."""
    return {
        where: int(REGISTRY.get_sample_value("fotoowl_preview_originals_total", {"read_from": where}) or 0)
        for where in ("spool", "storage")
    }
