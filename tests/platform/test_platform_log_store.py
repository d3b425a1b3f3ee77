"""The ``log_store`` fixture speaks the OpenSearch API: documents are indexed, searched and counted."""

from __future__ import annotations

import uuid

import pytest
from opensearchpy import NotFoundError

pytestmark = pytest.mark.services


def test_index_search_and_count(log_store):
    client = log_store.client()
    index = "platform-logs"
    marker = f"marker-{uuid.uuid4().hex}"
    client.index(
        index=index,
        body={"service": "proposer", "message": f"request handled {marker}", "level": "info"},
        refresh=True,
    )
    client.index(
        index=index,
        body={"service": "critic", "message": "something else entirely", "level": "warn"},
        refresh=True,
    )

    hits = client.search(index=index, body={"query": {"match": {"message": marker}}})["hits"]
    assert hits["total"]["value"] == 1
    assert hits["hits"][0]["_source"]["service"] == "proposer"
    assert client.count(index=index, body={"query": {"match": {"message": marker}}})["count"] == 1
    assert client.count(index=index)["count"] == 2


def test_missing_index_is_a_404(log_store):
    with pytest.raises(NotFoundError):
        log_store.client().search(index="no-such-index", body={"query": {"match_all": {}}})
