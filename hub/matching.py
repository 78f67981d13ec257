"""Near-miss SKU suggestions: "did you mean ABC-1?" for a SKU that matches nothing exactly.

SKUs are matched character for character across channels (IDA Connect and the hub both do), so a
marketplace listing ``abc_1`` never links to the catalogue's ``ABC-1`` by itself. When an admin runs
a product reset, each unmatched SKU is shown with the catalogue SKUs it was *probably* meant to be.

A near miss differs only in the ways people mistype SKUs when keying them into a second system:

- letter case (``abc-1`` / ``ABC-1``),
- spaces, including leading and trailing ones (``ABC 1``, ``ABC-1 ``),
- separators: dashes, underscores, dots and slashes are interchangeable or missing (``ABC_1``,
  ``ABC1``, ``ABC.1``).

Anything else (a different digit, a missing letter) is *not* a near miss: in a fashion catalogue
``DRESS-10`` and ``DRESS-12`` are two sizes, and suggesting one for the other would be wrong.
"""

from __future__ import annotations

import difflib
import re
from collections import defaultdict
from collections.abc import Iterable

# Characters that people swap for one another or leave out when retyping a SKU.
_NOISE = re.compile(r"[\s\-_./]+")

DEFAULT_LIMIT = 5


def near_miss_key(sku: str) -> str:
    """The form two SKUs share when they differ only by case, spaces or separators."""
    return _NOISE.sub("", sku).casefold()


class NearMissIndex:
    """The candidates indexed once by their near-miss key, for many ``suggest`` calls.

    A product reset checks every listed SKU against the whole catalogue; building the index once
    keeps that linear rather than listed x catalogue.
    """

    def __init__(self, candidates: Iterable[str]) -> None:
        self._by_key: dict[str, set[str]] = defaultdict(set)
        for candidate in candidates:
            key = near_miss_key(candidate)
            if key:
                self._by_key[key].add(candidate)

    def suggest(self, sku: str, limit: int = DEFAULT_LIMIT) -> list[str]:
        """Candidates that are near misses of ``sku`` (never ``sku`` itself), closest first."""
        key = near_miss_key(sku)
        if not key:
            return []
        found = [candidate for candidate in self._by_key.get(key, ()) if candidate != sku]
        found.sort(key=lambda candidate: _closeness(sku, candidate))
        return found[:limit]


def _closeness(sku: str, candidate: str) -> tuple[float, float, str]:
    """Sort key: fewest characters changed ignoring case, then counting case, then alphabetical."""
    folded = difflib.SequenceMatcher(None, sku.casefold(), candidate.casefold()).ratio()
    exact = difflib.SequenceMatcher(None, sku, candidate).ratio()
    return (-folded, -exact, candidate)


def suggest(sku: str, candidates: Iterable[str], limit: int = DEFAULT_LIMIT) -> list[str]:
    """Catalogue SKUs that ``sku`` was probably meant to be, closest first.

    >>> suggest("abc_1", ["ABC-1", "ABC-2", "XYZ"])
    ['ABC-1']
    """
    return NearMissIndex(candidates).suggest(sku, limit)
