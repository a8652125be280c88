"""fragment-connector adapter for the (fictional) Searchdesk back-office, whose search is capped."""

from fc_searchdesk.adapter import SearchdeskAdapter, SearchdeskOptions

__all__ = ["SearchdeskAdapter", "SearchdeskOptions"]
