"""The use cases and the composition root: ``service`` (what each function calls), ``ingest`` (catalog
rows to items and deltas), ``build`` (an index and signals version) and ``runtime`` (settings, clients,
stores and cached artifacts, built once per container).
"""

__all__ = ["build", "ingest", "runtime", "service"]
