"""What residents are told of their reports' statuses: the message id of each status's name."""

from __future__ import annotations

from consulta.flows.i18n import N_

__all__ = ["STATUS_LABELS"]

STATUS_LABELS = {
    "received": N_("report-status-received"),
    "in_review": N_("report-status-in_review"),
    "in_progress": N_("report-status-in_progress"),
    "resolved": N_("report-status-resolved"),
    "rejected": N_("report-status-rejected"),
    "duplicate": N_("report-status-duplicate"),
}
