"""Near-miss SKU suggestions: case, spaces and separators; never a different character."""

from __future__ import annotations

import string

from hypothesis import given
from hypothesis import strategies as st

from hub.matching import NearMissIndex, near_miss_key, suggest

CATALOGUE = ["ABC-1", "ABC-2", "DRESS-10", "DRESS-12", "TEE_BLK_M", "Tee-Wht-M"]

SKU_ALPHABET = string.ascii_uppercase + string.digits
skus = st.text(alphabet=SKU_ALPHABET, min_size=1, max_size=12)
separators = st.sampled_from(["-", "_", " ", ".", "/", ""])


def test_the_usual_mistypings_find_the_catalogue_sku() -> None:
    assert suggest("abc-1", CATALOGUE) == ["ABC-1"]  # case
    assert suggest("ABC 1", CATALOGUE) == ["ABC-1"]  # a space for a dash
    assert suggest(" ABC-1 ", CATALOGUE) == ["ABC-1"]  # stray spaces around it
    assert suggest("ABC_1", CATALOGUE) == ["ABC-1"]  # underscore for a dash
    assert suggest("ABC1", CATALOGUE) == ["ABC-1"]  # the separator left out
    assert suggest("TEE-BLK-M", CATALOGUE) == ["TEE_BLK_M"]  # dashes for underscores


def test_a_different_character_is_never_suggested() -> None:
    assert suggest("DRESS-11", CATALOGUE) == []  # another size, not a typo of one
    assert suggest("ABC-3", CATALOGUE) == []
    assert suggest("", CATALOGUE) == [] and suggest("--", CATALOGUE) == []


def test_the_exact_sku_is_not_its_own_suggestion_and_the_closest_comes_first() -> None:
    candidates = ["ABC-1", "abc_1", "A B C 1", "ABC1"]
    assert suggest("ABC-1", candidates) == ["ABC1", "abc_1", "A B C 1"]
    assert suggest("abc-1", candidates, limit=2) == ["ABC-1", "ABC1"]


@given(st.lists(skus, min_size=1, max_size=4), st.lists(separators, min_size=4, max_size=4),
       st.lists(st.booleans(), min_size=50, max_size=50))
def test_any_change_of_case_or_separators_is_suggested(parts: list[str], seps: list[str], lower: list[bool]) -> None:
    original = "-".join(parts)
    mistyped = "".join(part + (seps[i] if i < len(parts) - 1 else "") for i, part in enumerate(parts))
    mistyped = "".join(c.lower() if lower[i % len(lower)] else c for i, c in enumerate(mistyped))
    if mistyped != original:
        assert original in suggest(mistyped, [original, "UNRELATED-0"])


@given(st.text(max_size=15), st.lists(st.text(max_size=15), max_size=20))
def test_suggestions_are_near_misses_never_the_sku_itself(sku: str, candidates: list[str]) -> None:
    found = suggest(sku, candidates)
    assert sku not in found
    assert all(near_miss_key(candidate) == near_miss_key(sku) for candidate in found)
    assert found == suggest(sku, list(reversed(candidates)))  # order of the catalogue does not matter
    assert len(found) == len(set(found))


@given(st.lists(skus, min_size=1, max_size=30, unique=True))
def test_an_index_answers_like_suggest(catalogue: list[str]) -> None:
    index = NearMissIndex(catalogue)
    for sku in catalogue:
        assert index.suggest(sku.lower()) == suggest(sku.lower(), catalogue)
