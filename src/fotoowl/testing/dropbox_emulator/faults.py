"""Faults the Dropbox emulator can inject, and the rules saying on which requests and how often."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# list: files/list_folder; continue: files/list_folder/continue; metadata: get_shared_link_metadata;
# download: get_shared_link_file.
DropboxRoute = Literal["list", "continue", "metadata", "download", "any"]


@dataclass(frozen=True, slots=True)
class DropboxFault:
    """One misbehaviour. Build with the class methods; `applies_to_body` says which stage applies it."""

    kind: Literal["status", "rate_limited", "latency", "drop", "reset", "truncate", "slow", "ignore_range"]
    status: int = 0
    tags: tuple[str, ...] = ()
    retry_after_s: float | None = None
    json_body: bool = True
    after_bytes: int = 0
    latency_s: float = 0.0
    bandwidth_bytes_per_s: float = 0.0

    @classmethod
    def rate_limited(cls, retry_after_s: float | None = 0.0, *, json_body: bool = True) -> DropboxFault:
        """429 too_many_requests: with the RateLimitError JSON, or (json_body=False) a bare Retry-After header,
        or (json_body=False, retry_after_s=None) nothing saying how long to wait."""
        return cls("rate_limited", status=429, retry_after_s=retry_after_s, json_body=json_body)

    @classmethod
    def http(cls, status: int) -> DropboxFault:
        """A server error page (5xx), or any other bare status."""
        return cls("status", status=status)

    @classmethod
    def route_error(cls, *tags: str) -> DropboxFault:
        """A 409 with this route error, e.g. route_error("path", "not_found")."""
        return cls("status", status=409, tags=tags)

    @classmethod
    def latency(cls, latency_s: float) -> DropboxFault:
        return cls("latency", latency_s=latency_s)

    @classmethod
    def drop(cls) -> DropboxFault:
        """Close the connection without answering."""
        return cls("drop")

    @classmethod
    def reset(cls, after_bytes: int) -> DropboxFault:
        """Announce the full Content-Length, send `after_bytes` of the body, then abort the connection."""
        return cls("reset", after_bytes=after_bytes)

    @classmethod
    def truncate(cls, after_bytes: int) -> DropboxFault:
        """Send the body chunked (no Content-Length) and end it cleanly after `after_bytes`."""
        return cls("truncate", after_bytes=after_bytes)

    @classmethod
    def slow(cls, bandwidth_bytes_per_s: float) -> DropboxFault:
        return cls("slow", bandwidth_bytes_per_s=bandwidth_bytes_per_s)

    @classmethod
    def ignore_range(cls) -> DropboxFault:
        """Answer a Range request with 200 and the whole file, as some proxies do."""
        return cls("ignore_range")

    @property
    def applies_to_body(self) -> bool:
        return self.kind in ("reset", "truncate", "slow", "ignore_range")


@dataclass(slots=True)
class _DropboxFaultRule:
    fault: DropboxFault
    path: str | None
    route: DropboxRoute
    remaining: int | None
    probability: float = 1.0

    def matches(self, route: str, path: str, body_stage: bool) -> bool:
        return (
            self.remaining != 0
            and self.fault.applies_to_body == body_stage
            and self.route in (route, "any")
            and (self.path is None or self.path.lower() == path.lower())
        )
