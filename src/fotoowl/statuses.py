"""Every status an import or an item can have: one enum each, used by the code, the pages, the API
models and the tests. The CHECK constraints in sql/ list the same values (a test pins them)."""

from __future__ import annotations

from enum import StrEnum


class ImportStatus(StrEnum):
    QUEUED = "queued"
    LISTING = "listing"
    RUNNING = "running"
    COMPLETED = "completed"
    COMPLETED_WITH_ERRORS = "completed_with_errors"
    FAILED = "failed"
    CANCELLED = "cancelled"
    # Its objects and rows are being removed; the import disappears once they are.
    DELETING = "deleting"


class ItemStatus(StrEnum):
    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    DONE = "done"
    SKIPPED = "skipped"
    FAILED = "failed"
    CANCELLED = "cancelled"
    # Stored already with the same checksum and modified time: not copied again.
    UNCHANGED = "unchanged"
    # An earlier import of the folder stored it; the folder no longer has it.
    REMOVED = "removed"


ACTIVE: frozenset[ImportStatus] = frozenset({ImportStatus.QUEUED, ImportStatus.LISTING, ImportStatus.RUNNING})
FINISHED: frozenset[ImportStatus] = frozenset(set(ImportStatus) - ACTIVE)
# Imports whose failed files can be queued again.
RETRYABLE: frozenset[ImportStatus] = frozenset(
    {ImportStatus.LISTING, ImportStatus.RUNNING, ImportStatus.COMPLETED_WITH_ERRORS}
)
