"""fragment-connector adapter for the (fictional) Helpdesk back-office: an example plug-in."""

from fc_helpdesk.adapter import HelpdeskAdapter, HelpdeskOptions

__all__ = ["HelpdeskAdapter", "HelpdeskOptions"]
