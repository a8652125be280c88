"""The Searchdesk adapter against the conformance kit of fragment-connector."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from adapters.testing import AdapterConformance
from fc_searchdesk import SearchdeskAdapter
from fc_searchdesk.fake import API_KEY, SearchdeskBackoffice


class TestSearchdeskConformance(AdapterConformance):
    adapter_class = SearchdeskAdapter

    @pytest.fixture
    def backoffice(self) -> Iterator[SearchdeskBackoffice]:
        # 700 tickets, 620 open: more than the 300 one search answers.
        with SearchdeskBackoffice(tickets=700) as fake:
            yield fake

    @pytest.fixture
    def options(self, backoffice: SearchdeskBackoffice) -> dict[str, Any]:
        return {"base_url": backoffice.url, "api_key": API_KEY}

    @pytest.fixture
    def bad_options(self, backoffice: SearchdeskBackoffice) -> dict[str, Any]:
        return {"base_url": backoffice.url, "api_key": "wrong-key-5678"}
