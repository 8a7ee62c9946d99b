"""The one way to reject a setting here: a ValueError naming the key, the value and what is allowed."""

from __future__ import annotations


def is_int(value: object) -> bool:
    """An int that is not a bool (``True`` would otherwise pass as 1)."""
    return isinstance(value, int) and not isinstance(value, bool)


def require(ok: bool, key: str, value: object, allowed: str) -> None:
    """Raises ``ValueError("{key}={value!r} is not allowed: {allowed}")`` unless ``ok``.

    Example:
        >>> require(5 >= 1, "model.n_critic", 5, "must be an integer >= 1")
        >>> require(0 >= 1, "model.n_critic", 0, "must be an integer >= 1")
        Traceback (most recent call last):
        ...
        ValueError: model.n_critic=0 is not allowed: must be an integer >= 1
    """
    if not ok:
        raise ValueError(f"{key}={value!r} is not allowed: {allowed}")


def require_int(key: str, value: object, minimum: int) -> None:
    """:func:`require` that ``value`` is an integer >= ``minimum``."""
    require(is_int(value) and value >= minimum, key, value, f"must be an integer >= {minimum}")
