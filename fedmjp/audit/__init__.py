"""The leakage audit: the append-only store and the report."""

from .store import AuditRecord, AuditStore

__all__ = ["AuditRecord", "AuditStore"]
