"""embrec: a serverless, embedding-based recommendation engine for AWS.

This package is the Lambda layer: only what a function imports at run time, by role (``app``, ``edge``,
``aws``, ``engine``, ``domain``, and the foundation modules ``config``, ``errors``, ``observability``,
``manifest``). The Lambda handlers under ``functions/`` and the ``embrec`` CLI (``embrec_tools``) both call
:mod:`embrec.app.service`. Nothing here does I/O at import time.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
