"""Faults: the misbehaviours the emulator can inject, and the rules that say where and how often."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from fotoowl.testing.drive_emulator.errors import _DEFAULT_REASONS

FaultOn = Literal["list", "get", "media", "any"]


@dataclass(frozen=True, slots=True)
class Fault:
    """One misbehaviour. Build with the class methods; `kind` says which stage applies it."""

    kind: Literal["status", "latency", "drop", "reset", "truncate", "slow", "ignore_range"]
    status: int = 0
    reason: str = ""
    retry_after_s: float | None = None
    after_bytes: int = 0
    latency_s: float = 0.0
    bandwidth_bytes_per_s: float = 0.0

    @classmethod
    def http(cls, status: int, reason: str | None = None, *, retry_after_s: float | None = None) -> Fault:
        """An error answer; 502 comes as an HTML page, like Google's front end sends it."""
        return cls(
            "status", status=status, reason=reason or _DEFAULT_REASONS.get(status, ""), retry_after_s=retry_after_s
        )

    @classmethod
    def rate_limited(cls, status: int = 429, reason: str = "rateLimitExceeded", retry_after_s: float = 0) -> Fault:
        return cls.http(status, reason, retry_after_s=retry_after_s)

    @classmethod
    def download_quota(cls) -> Fault:
        return cls.http(403, "downloadQuotaExceeded")

    @classmethod
    def latency(cls, latency_s: float) -> Fault:
        return cls("latency", latency_s=latency_s)

    @classmethod
    def drop(cls) -> Fault:
        """Close the connection without answering (the client sees a server disconnect)."""
        return cls("drop")

    @classmethod
    def ignore_range(cls) -> Fault:
        """Answer a Range request with 200 and the whole file, as some servers and proxies do."""
        return cls("ignore_range")

    @classmethod
    def reset(cls, after_bytes: int) -> Fault:
        """Announce the full Content-Length, send `after_bytes` of the body, then abort the connection."""
        return cls("reset", after_bytes=after_bytes)

    @classmethod
    def truncate(cls, after_bytes: int) -> Fault:
        """Send the body chunked (no Content-Length) and end it cleanly after `after_bytes`."""
        return cls("truncate", after_bytes=after_bytes)

    @classmethod
    def slow(cls, bandwidth_bytes_per_s: float) -> Fault:
        return cls("slow", bandwidth_bytes_per_s=bandwidth_bytes_per_s)

    @property
    def applies_to_body(self) -> bool:
        return self.kind in ("reset", "truncate", "slow", "ignore_range")


@dataclass(slots=True)
class _FaultRule:
    fault: Fault
    target_id: str | None
    on: FaultOn
    remaining: int | None
    probability: float = 1.0

    def matches(self, kind: str, item_id: str, body_stage: bool) -> bool:
        return (
            self.remaining != 0
            and self.fault.applies_to_body == body_stage
            and self.on in (kind, "any")
            and self.target_id in (None, item_id)
        )
