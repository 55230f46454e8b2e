"""embrec: a serverless, embedding-based recommendation engine for AWS.

The package is pure domain logic plus thin adapters for AWS; the Lambda handlers under ``functions/`` and the
``embrec`` CLI both call :mod:`embrec.app.service`. Nothing here does I/O at import time.
"""

__version__ = "0.1.0"
