"""HTML forms generated from a channel's marshmallow schemas, and read back for the same schemas.

The plugin's ``credentials_schema`` / ``settings_schema`` are the single source: field types become
inputs, ``validate.OneOf`` a select, ``required`` a marker, ``metadata["description"]`` the help
text; lists, dicts and nested schemas are edited as JSON. Validation is the schema's own ``load``.
Secrets are never put back into a page: their input is empty with a mask as placeholder, and an
empty input keeps the stored value.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from marshmallow import Schema, fields, missing, validate

from hub.secrets import mask

_SECRET_NAME = re.compile(r"(secret|password|passwd|token|api_?key|private|subscription_key)", re.IGNORECASE)
JSON_FIELDS = (fields.List, fields.Dict, fields.Nested, fields.Tuple)


@dataclass
class FormField:
    name: str
    label: str
    kind: str  # text | password | number | checkbox | select | json | email | url
    required: bool = False
    help: str = ""
    choices: list[str] = field(default_factory=list)
    value: Any = ""
    placeholder: str = ""
    secret: bool = False
    stored: bool = False  # a secret is stored (the empty input keeps it)


def is_secret(name: str, declared: tuple[str, ...] = ()) -> bool:
    """A field never rendered back: declared by the channel (``secret_fields``) or named like a secret."""
    return name in declared or bool(_SECRET_NAME.search(name))


def describe(schema_class: type[Schema], values: Mapping[str, Any], *, secret_fields: tuple[str, ...] = ()) -> list[FormField]:
    """One FormField per schema field, filled with ``values`` (stored or just typed)."""
    schema = schema_class()
    return [_describe_field(name, schema_field, values, secret_fields) for name, schema_field in schema.load_fields.items()]


def _describe_field(name: str, schema_field: fields.Field, values: Mapping[str, Any], secret_fields: tuple[str, ...]) -> FormField:
    key = schema_field.data_key or name
    secret = is_secret(key, secret_fields) and not isinstance(schema_field, fields.Boolean)
    item = FormField(
        name=key,
        label=key.replace("_", " ").capitalize(),
        kind=_kind(schema_field, secret),
        required=bool(schema_field.required),
        help=str(schema_field.metadata.get("description", "")),
        choices=_choices(schema_field),
        secret=secret,
    )
    current = values.get(key, _default(schema_field))
    if secret:
        item.stored = bool(values.get(key))
        item.placeholder = f"{mask(values[key])} stored (leave empty to keep)" if item.stored else ""
        return item
    item.value = _display(current, item.kind)
    return item


def _kind(schema_field: fields.Field, secret: bool) -> str:
    if secret:
        return "password"
    if isinstance(schema_field, fields.Boolean):
        return "checkbox"
    if _choices(schema_field):
        return "select"
    if isinstance(schema_field, JSON_FIELDS):
        return "json"
    if isinstance(schema_field, (fields.Integer, fields.Float, fields.Decimal)):
        return "number"
    if isinstance(schema_field, fields.Email):
        return "email"
    if isinstance(schema_field, fields.Url):
        return "url"
    return "text"


def _choices(schema_field: fields.Field) -> list[str]:
    for validator in schema_field.validators:
        if isinstance(validator, validate.OneOf):
            return [str(choice) for choice in validator.choices]
    return []


def _default(schema_field: fields.Field) -> Any:
    default = schema_field.load_default
    if default is missing:
        return None
    return default() if callable(default) else default


def _display(value: Any, kind: str) -> Any:
    if kind == "json":
        if value is None or isinstance(value, str):  # a string is JSON the admin typed and got wrong
            return value or ""
        return json.dumps(value, indent=2, default=str)
    if kind == "checkbox":
        return bool(value)
    return "" if value is None else value


def read(
    schema_class: type[Schema], form: Mapping[str, str], prefix: str, stored: Mapping[str, Any],
    *, secret_fields: tuple[str, ...] = (),
) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """The raw data for ``schema_class().load`` from a submitted form, and JSON syntax errors.

    Empty inputs are left out (so the schema's defaults and "required" apply); an empty secret
    keeps its stored value.
    """
    data: dict[str, Any] = {}
    errors: dict[str, list[str]] = {}
    for item in describe(schema_class, {}, secret_fields=secret_fields):
        raw = form.get(prefix + item.name)
        if item.kind == "checkbox":
            data[item.name] = raw is not None
            continue
        raw = (raw or "").strip()
        if not raw:
            if item.secret and stored.get(item.name):
                data[item.name] = stored[item.name]
            continue
        if item.kind == "json":
            try:
                data[item.name] = json.loads(raw)
            except ValueError as error:
                errors[item.name] = [f"is not valid JSON ({error.msg} at line {error.lineno})"]
            continue
        data[item.name] = raw
    return data, errors


def typed_values(schema_class: type[Schema], form: Mapping[str, str], prefix: str) -> dict[str, Any]:
    """What the admin typed, to put back into a form that failed validation (never secrets)."""
    values: dict[str, Any] = {}
    for item in describe(schema_class, {}):
        raw = form.get(prefix + item.name)
        if item.kind == "checkbox":
            values[item.name] = raw is not None
        elif item.kind == "json":
            try:
                values[item.name] = json.loads(raw) if raw else None
            except ValueError:
                values[item.name] = raw  # shown back as typed so nothing is lost
        elif raw:
            values[item.name] = raw
    return values


def flatten_errors(messages: Any) -> dict[str, list[str]]:
    """marshmallow's nested error dict as {field: [messages]} for display next to inputs."""
    if not isinstance(messages, dict):
        return {"_schema": [str(messages)]}
    flat: dict[str, list[str]] = {}
    for key, value in messages.items():
        if isinstance(value, dict):
            for sub, problems in flatten_errors(value).items():
                flat.setdefault(str(key), []).extend(f"{sub}: {p}" for p in problems)
        elif isinstance(value, list):
            flat[str(key)] = [str(v) if not isinstance(v, dict) else json.dumps(v) for v in value]
        else:
            flat[str(key)] = [str(value)]
    return flat
