"""Malformed remote payloads for property-based tests, made by mutating a valid sample.

:func:`mutated` draws 1-3 mutations of a JSON-like sample, each at a path chosen among the sample's
current paths: a key deleted, an unknown key added, the value replaced with a wrong type, a number
turned into a string, an object wrapped in a one-element list, a list replaced by its first item, a
string made huge or exotic unicode, a SKU given spaces. :func:`check_mapping` calls a mapping with
the result and asserts the outcome is a value or one of the hub's clear errors naming a mutated field.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from hub import records
from hub.errors import ContractError, RejectedItem, ValidationError

Path = tuple[Any, ...]
CLEAR_ERRORS = (ContractError, RejectedItem, ValidationError)

# Enough to cover every mutation kind on every path a few times, and keep each module well under 60 s.
FUZZ = settings(max_examples=300, deadline=None, derandomize=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])

HUGE = "x" * 100_000
UNICODE = ("Ünïcødé ✓ 日本語 🧵", "\u202eRTL-override", "zero\u200bwidth", "\ud7ff\ue000", "ﬁ ligature", "null\x00byte")
SKU_SPACES = (" SKU-1", "SKU-1 ", "SKU 1", "SKU\t1", "  ", "SKU-1\n")
NUMBER_STRINGS = ("12.50", "-1", "0", "1e309", "NaN", "Infinity", "1,000", "", " 7 ")

_wrong_values = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(NUMBER_STRINGS), st.sampled_from(UNICODE),
    st.just(HUGE), st.text(max_size=8), st.just([]), st.just({}), st.lists(st.integers(), min_size=1, max_size=2),
    st.dictionaries(st.sampled_from(["id", "name", "sku", "x"]), st.integers(), min_size=1, max_size=2),
)
# Copied: a later mutation may write into a drawn [] or {}, which must not change the strategy's constant.
wrong_values = _wrong_values.map(copy.deepcopy)


@dataclass
class Mutation:
    kind: str
    path: Path

    def __str__(self) -> str:
        return f"{self.kind} at {short('/'.join(map(str, self.path)), 80) or '(root)'}"


@dataclass
class Mutated:
    payload: Any
    mutations: list[Mutation] = field(default_factory=list)

    def __str__(self) -> str:
        return "; ".join(str(m) for m in self.mutations)


def short(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def paths(value: Any, prefix: Path = ()) -> Iterator[Path]:
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from paths(item, (*prefix, index))


def get(value: Any, path: Path) -> Any:
    for part in path:
        value = value[part]
    return value


def put(root: Any, path: Path, new: Any) -> Any:
    if not path:
        return new
    get(root, path[:-1])[path[-1]] = new
    return root


KINDS = ("delete", "extra", "wrong_type", "as_string", "wrap_in_list", "first_of_list", "huge", "unicode", "sku_spaces")


@st.composite
def mutated(draw: st.DrawFn, sample: Any, *, max_mutations: int = 3) -> Mutated:
    doc = copy.deepcopy(sample)
    result = Mutated(doc)
    for _ in range(draw(st.integers(min_value=1, max_value=max_mutations))):
        path = draw(st.sampled_from(list(paths(result.payload))))
        current = get(result.payload, path)
        kind = draw(st.sampled_from(KINDS))
        parent = get(result.payload, path[:-1]) if path else None
        if kind == "delete" and isinstance(parent, dict):
            del parent[path[-1]]
        elif kind == "delete" and isinstance(parent, list):
            parent.pop(path[-1])
        elif kind == "extra" and isinstance(current, dict):
            key = draw(st.sampled_from(["unexpected", "id", "__proto__", "sku", HUGE[:300]]))
            current[key] = draw(wrong_values)
            path = (*path, key)  # an error may name the key it found
        elif kind == "as_string" and isinstance(current, (int, float)) and not isinstance(current, bool):
            result.payload = put(result.payload, path, str(current))
        elif kind == "wrap_in_list":
            result.payload = put(result.payload, path, [current])
        elif kind == "first_of_list" and isinstance(current, list):
            result.payload = put(result.payload, path, current[0] if current else None)
        elif kind == "huge" and isinstance(current, str):
            result.payload = put(result.payload, path, current + HUGE)
        elif kind == "unicode" and isinstance(current, str):
            result.payload = put(result.payload, path, draw(st.sampled_from(UNICODE)))
        elif kind == "sku_spaces" and isinstance(current, str):
            result.payload = put(result.payload, path, draw(st.sampled_from(SKU_SPACES)))
        else:
            kind = "wrong_type"
            result.payload = put(result.payload, path, draw(wrong_values))
        result.mutations.append(Mutation(kind, path))
    return result


def check_mapping(call: Callable[[Any], Any], case: Mutated, *, arguments: int = 0) -> Any:
    """Call ``call(case.payload)``: it returns, or raises a clear hub error naming a mutated field.

    ``arguments=1`` when the sample's top-level keys name the function's arguments rather than remote
    fields: a whole argument replaced or removed need only give a message, not name a field. Also
    checked: the mapping leaves its input untouched (pure: nothing half-written), error messages stay
    short whatever the input's size, and every canonical record it returns either validates or fails
    validation with ValidationError.
    """
    before = copy.deepcopy(case.payload)
    try:
        result = call(case.payload)
    except CLEAR_ERRORS as error:
        message = str(error)
        assert message.strip(), f"{type(error).__name__} without a message for {case}"
        assert len(message) < 2000, f"{type(error).__name__} message of {len(message)} characters for {case}"
        text = f"{message} {getattr(error, 'field', '') or ''} {_detail_field(error)}"
        keyed = [[str(part) for part in m.path[arguments:] if isinstance(part, str)] for m in case.mutations]
        names = {name for keys in keyed for name in keys}
        explicit = bool(getattr(error, "field", None))  # the error names its field itself
        if keyed and all(keyed) and not explicit:  # a whole argument or list item replaced: any message will do
            assert any(name in text for name in names), (
                f"{type(error).__name__}({short(message)}) names none of the mutated fields {sorted(names)[:5]}: {case}")
        result = None
    except Exception as error:  # the property: nothing else may escape a mapping
        raise AssertionError(f"{type(error).__name__} escaped the mapping after {case}: {short(repr(error))}") from error
    assert case.payload == before or _nan_in(before), f"the mapping changed its input after {case.mutations}"
    for record in canonical_records(result):
        try:
            records.validate_record(record)
        except ValidationError:
            pass
    return result


def canonical_records(value: Any) -> Iterator[Any]:
    if type(value) in records.SCHEMAS:
        yield value
    elif is_dataclass(value) and not isinstance(value, type):
        for item in fields(value):
            yield from canonical_records(getattr(value, item.name))
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from canonical_records(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from canonical_records(item)


def _detail_field(error: Exception) -> str:
    detail = getattr(error, "detail", None)
    return str(detail.get("field", "")) if isinstance(detail, dict) and set(detail) <= {"field"} else ""


def _nan_in(value: Any) -> bool:
    if isinstance(value, float):
        return value != value
    if isinstance(value, dict):
        return any(_nan_in(v) for v in value.values())
    if isinstance(value, list):
        return any(_nan_in(v) for v in value)
    return False
