"""Settings: a bad or missing setting stops a function at start, named in the log, never told a client."""

from __future__ import annotations

import json
import logging

import pytest

from embrec import config
from embrec.config import RESOURCE_VARIABLES, Settings
from embrec.edge.resolver import api_resolver
from embrec.errors import ConfigurationError
from embrec.observability import logger

FULL = {name: f"name-of-{name.lower()}" for name in RESOURCE_VARIABLES}


def test_resource_names_are_required_outside_the_local_stack() -> None:
    with pytest.raises(ConfigurationError) as raised:
        Settings.from_env({})
    assert config.ENV_BUCKET in raised.value.variable
    partial = {k: v for k, v in FULL.items() if k != config.ENV_ITEMS_TABLE}
    with pytest.raises(ConfigurationError) as raised:
        Settings.from_env(partial)
    assert raised.value.variable == config.ENV_ITEMS_TABLE
    assert Settings.from_env(FULL).bucket == FULL[config.ENV_BUCKET]


def test_the_local_stack_keeps_its_default_names() -> None:
    assert Settings.from_env({}, local=True).bucket == Settings().bucket
    assert Settings.from_env({config.ENV_AWS_ENDPOINT: "http://127.0.0.1:4566"}).bucket == Settings().bucket


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        (config.ENV_EVENT_TTL_DAYS, "soon"),
        (config.ENV_AUTH, "basic"),
        (config.ENV_INDEX_REFRESH_SECONDS, "-1"),
    ],
)
def test_a_bad_value_is_a_configuration_error_naming_the_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        Settings.from_env({**FULL, variable: value})
    assert raised.value.variable == variable and raised.value.status == 500


def test_a_function_does_not_start_with_a_bad_setting(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from embrec.app.runtime import reset_runtime, settings_at_start

    for name in RESOURCE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv(config.ENV_AWS_ENDPOINT, raising=False)
    reset_runtime()
    try:
        with pytest.raises(ConfigurationError):
            settings_at_start()
    finally:
        reset_runtime()


def test_clients_never_see_configuration_details() -> None:
    app = api_resolver(logger)

    @app.get("/boom")
    def boom() -> None:
        raise ConfigurationError("EMBREC_BUCKET", "must be set")

    event = {
        "version": "2.0",
        "routeKey": "GET /boom",
        "rawPath": "/boom",
        "rawQueryString": "",
        "headers": {},
        "requestContext": {"http": {"method": "GET", "path": "/boom"}, "stage": "$default"},
        "isBase64Encoded": False,
    }
    logging.disable(logging.CRITICAL)
    try:
        response = app.resolve(event, None)
    finally:
        logging.disable(logging.NOTSET)
    assert response["statusCode"] == 500
    assert "EMBREC" not in response["body"] and json.loads(response["body"])["error"] == "internal_error"
