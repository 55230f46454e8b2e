"""The HTTP edge: ``contract`` (request parsing and the OpenAPI document), ``resolver`` (the Powertools
resolver with the one error mapping) and ``auth`` (callers and object-level checks).
"""

__all__ = ["auth", "contract", "resolver"]
