"""The pure domain: numpy and the standard library only (checked by ``make lint``).

Value types and the index port (``model``), catalog rows (``catalog``), user vectors (``profiles``), CF and
trending signals (``signals``), the blend (``ranking``), multi-modal item vectors (``fusion``), A/B
assignment (``experiments``) and A/B statistics (``reporting``). No I/O.
"""

__all__ = ["catalog", "experiments", "fusion", "model", "profiles", "ranking", "reporting", "signals"]
