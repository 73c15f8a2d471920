"""State that adds up: ``a += b``, ``a + b`` and ``==`` from ``merge`` and ``to_dict``."""

from __future__ import annotations

import copy
from typing import Any, Self

__all__ = ["Mergeable"]


class Mergeable:
    """Base of a state that takes another partition's state into itself.

    A subclass defines ``merge(other)`` (in place, returning ``self``) and ``to_dict()``
    (its plain, JSON-able state). Then ``a += b`` merges, ``a + b`` merges into a copy,
    ``==`` compares the plain states, and instances are unhashable: they change.

    >>> class Count(Mergeable):
    ...     def __init__(self, n: int) -> None:
    ...         self.n = n
    ...     def merge(self, other: Count) -> Count:
    ...         self.n += other.n
    ...         return self
    ...     def to_dict(self) -> dict[str, int]:
    ...         return {"n": self.n}
    >>> a = Count(2)
    >>> b = a + Count(3)
    >>> a += Count(1)
    >>> (a.n, b.n, b == Count(5), a == b)
    (3, 5, True, False)
    """

    __slots__ = ()

    def merge(self, other: Self) -> Self:
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def __iadd__(self, other: Self) -> Self:
        return self.merge(other)

    def __add__(self, other: Self) -> Self:
        return copy.deepcopy(self).merge(other)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, type(self)):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]
