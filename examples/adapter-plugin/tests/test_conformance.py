"""The Helpdesk adapter against the conformance kit of fragment-connector."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from adapters.testing import AdapterConformance
from fc_helpdesk import HelpdeskAdapter
from fc_helpdesk.fake import TOKEN, HelpdeskBackoffice


class TestHelpdeskConformance(AdapterConformance):
    adapter_class = HelpdeskAdapter

    @pytest.fixture
    def backoffice(self) -> Iterator[HelpdeskBackoffice]:
        with HelpdeskBackoffice(tickets=120) as fake:
            yield fake

    @pytest.fixture
    def options(self, backoffice: HelpdeskBackoffice) -> dict[str, Any]:
        return {"base_url": backoffice.url, "token": TOKEN, "per_page": 25}

    @pytest.fixture
    def bad_options(self, backoffice: HelpdeskBackoffice) -> dict[str, Any]:
        return {"base_url": backoffice.url, "token": "wrong-token-5678", "per_page": 25}
