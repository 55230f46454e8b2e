"""Every ``EMBREC_*`` setting the user exports wins over template.yaml's default locally (issue 14).

Given the real template and handlers on free ports, when the user has exported a retention of 3,650 days
(the template says 365) and a table name of their own, then a two-year-old event is accepted and stored in
that table, and stopping the stack gives the user's environment back unchanged.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import boto3
import pytest
import requests

from embrec_tools.local import LocalEnvironment

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(120)


def test_exported_settings_win_over_the_template_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMBREC_EVENT_TTL_DAYS", "3650")
    monkeypatch.setenv("EMBREC_INTERACTIONS_TABLE", "team-interactions")
    two_years_ago = time.time() - 730 * 86_400
    event = {"event_id": "old-1", "user_id": "u-1", "item_id": "ml-1", "type": "like",
             "timestamp": two_years_ago}

    with LocalEnvironment(ROOT, api_port=0, aws_port=0, aws_endpoint=None, dispatch=False,
                          schedule=False) as env:
        assert env.settings.event_ttl_days == 3650
        response = requests.post(f"{env.api_url}/events", json={"events": [event]}, timeout=60)
        assert response.status_code == 202, response.text
        assert response.json()["results"] == [{"event_id": "old-1", "status": "accepted"}]
        dynamodb = boto3.client("dynamodb", endpoint_url=env.endpoint_url, region_name=env.region,
                                aws_access_key_id="test", aws_secret_access_key="test")
        stored = dynamodb.query(TableName="team-interactions", KeyConditionExpression="user_id = :u",
                                ExpressionAttributeValues={":u": {"S": "u-1"}})
        assert [row["event_id"]["S"] for row in stored["Items"]] == ["old-1"]

    assert os.environ["EMBREC_EVENT_TTL_DAYS"] == "3650"
    assert os.environ["EMBREC_INTERACTIONS_TABLE"] == "team-interactions"
