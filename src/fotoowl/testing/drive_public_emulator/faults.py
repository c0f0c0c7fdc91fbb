"""Faults: how the keyless pages misbehave when pushed or broken, and the rules that say where and how
often the emulator injects them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

PublicFaultOn = Literal["page", "download", "any"]


@dataclass(frozen=True, slots=True)
class PublicFault:
    """One misbehaviour. Build with the class methods; `kind` says which stage applies it."""

    kind: Literal[
        "status",
        "captcha",
        "sorry_redirect",
        "sign_in",
        "latency",
        "drop",
        "reset",
        "truncate",
        "ignore_range",
        "html_instead",
    ]
    status: int = 0
    retry_after_s: float | None = None
    after_bytes: int = 0
    latency_s: float = 0.0

    @classmethod
    def http(cls, status: int, *, retry_after_s: float | None = None) -> PublicFault:
        """An error answer (429, 5xx) with Google's small HTML error page."""
        return cls("status", status=status, retry_after_s=retry_after_s)

    @classmethod
    def captcha(cls, status: int = 429) -> PublicFault:
        """Google's "unusual traffic" page with its captcha form, in place of the answer."""
        return cls("captcha", status=status)

    @classmethod
    def sorry_redirect(cls) -> PublicFault:
        """A 302 to www.google.com/sorry/index, where that captcha lives."""
        return cls("sorry_redirect", status=302)

    @classmethod
    def sign_in(cls) -> PublicFault:
        """A 302 to accounts.google.com, as for an item that is not shared."""
        return cls("sign_in", status=302)

    @classmethod
    def html_instead(cls) -> PublicFault:
        """A 200 HTML page that is none of the known ones, where a folder page or bytes were expected."""
        return cls("html_instead", status=200)

    @classmethod
    def latency(cls, latency_s: float) -> PublicFault:
        return cls("latency", latency_s=latency_s)

    @classmethod
    def drop(cls) -> PublicFault:
        """Close the connection without answering."""
        return cls("drop")

    @classmethod
    def reset(cls, after_bytes: int) -> PublicFault:
        """Announce the full Content-Length, send `after_bytes` of the body, then abort the connection."""
        return cls("reset", after_bytes=after_bytes)

    @classmethod
    def truncate(cls, after_bytes: int) -> PublicFault:
        """Send the body chunked (no Content-Length) and end it cleanly after `after_bytes`."""
        return cls("truncate", after_bytes=after_bytes)

    @classmethod
    def ignore_range(cls) -> PublicFault:
        """Answer a Range request with 200 and the whole file."""
        return cls("ignore_range")

    @property
    def applies_to_body(self) -> bool:
        return self.kind in ("reset", "truncate", "ignore_range")


@dataclass(slots=True)
class _PublicFaultRule:
    fault: PublicFault
    target_id: str | None
    on: PublicFaultOn
    remaining: int | None

    def matches(self, kind: str, item_id: str, body_stage: bool) -> bool:
        return (
            self.remaining != 0
            and self.fault.applies_to_body == body_stage
            and self.on in (kind, "any")
            and self.target_id in (None, item_id)
        )
