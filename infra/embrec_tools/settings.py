"""The settings a command of the tooling uses (the CLI, the console): the environment's, local by default."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from embrec.config import Settings

__all__ = ["cli_settings"]


def cli_settings(real_aws: bool = False, env: Mapping[str, str] | None = None) -> Settings:
    """The settings a command uses: the environment's, pointed at the local endpoint unless told otherwise.

    ``EMBREC_AWS_ENDPOINT`` wins; else ``http://127.0.0.1:EMBREC_AWS_PORT``; ``real_aws``: no endpoint
    (boto3's normal resolution for the region and credentials).
    """
    settings = Settings.from_env(env, local=not real_aws)
    if real_aws:
        return dataclasses.replace(settings, aws_endpoint=None)
    if settings.aws_endpoint:
        return settings
    return dataclasses.replace(settings, aws_endpoint=f"http://127.0.0.1:{settings.aws_port}")
