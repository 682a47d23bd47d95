"""Argument checks shared by the pipeline, generation, evaluation and the demo, with errors that say the fix."""

from __future__ import annotations


def check_positive_int(name: str, value: object, none_means: str | None = None) -> None:
    """Raise ValueError unless ``value`` is an ``int`` >= 1 (``True`` is refused: it is a bool, not a count).

    Args:
        name: the argument's name, as the caller spells it.
        value: the value given.
        none_means: what ``None`` stands for when ``None`` is allowed (e.g. ``"the whole split"``).
    """
    if value is None and none_means is not None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        allowed = f"a positive integer or None ({none_means})" if none_means is not None else "a positive integer"
        raise ValueError(f"{name} must be {allowed}; got {value!r}.")
