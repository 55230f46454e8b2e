"""embrec_tools: what runs around the deployment, never in the Lambda layer (infra/README.md).

The ``embrec`` command (``cli``, ``settings``), the web console (``console``), the demo, the local stack
(``local``), template reading, datasets, offline evaluation, the encoder build and the A/B report's text
table. It may import ``embrec``; ``embrec`` never imports it.
"""

__all__ = [
    "cli",
    "console",
    "datasets",
    "demo",
    "encoder_build",
    "evaluation",
    "local",
    "report",
    "settings",
    "template",
]
