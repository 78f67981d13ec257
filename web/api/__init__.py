"""The REST API, ``/api/v1``: JSON in and out, personal bearer tokens, marshmallow-validated input.

Each view is declared with :func:`operation`, which registers the Flask route, its access level and
the OpenAPI description (request and response schemas) in one place, so the document at
``/api/openapi.json`` cannot drift from what the code accepts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flask import Blueprint, abort, jsonify, make_response, request
from marshmallow import Schema
from marshmallow import ValidationError as SchemaError

from web.access import allow

api_bp = Blueprint("api", __name__, url_prefix="/api/v1")


@dataclass
class Operation:
    rule: str
    method: str
    summary: str
    level: str
    endpoint: str
    body: type[Schema] | None = None
    query: type[Schema] | None = None
    response: type[Schema] | None = None
    many: bool = False
    status: int = 200
    errors: tuple[int, ...] = ()
    description: str = ""
    tags: list[str] = field(default_factory=list)


OPERATIONS: list[Operation] = []


def operation(rule: str, method: str, summary: str, *, level: str, tag: str, body: type[Schema] | None = None,
              query: type[Schema] | None = None, response: type[Schema] | None = None, many: bool = False,
              status: int = 200, errors: tuple[int, ...] = ()) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def register(view: Callable[..., Any]) -> Callable[..., Any]:
        allow(level)(view)
        api_bp.add_url_rule(rule, view.__name__, view, methods=[method])
        OPERATIONS.append(Operation(rule, method, summary, level, view.__name__, body, query, response, many, status,
                                    errors, (view.__doc__ or "").strip(), [tag]))
        return view

    return register


def load_body(schema: type[Schema]) -> dict[str, Any]:
    """The JSON body validated by ``schema``; a 400 naming every bad field otherwise."""
    data = request.get_json(silent=True)
    if data is None:
        if request.get_data():
            abort(make_response(jsonify(error="the body is not valid JSON"), 400))
        data = {}
    if not isinstance(data, dict):
        abort(make_response(jsonify(error="the body must be a JSON object"), 400))
    return _load(schema, data)


def load_query(schema: type[Schema]) -> dict[str, Any]:
    return _load(schema, request.args.to_dict())


def _load(schema: type[Schema], data: dict[str, Any]) -> dict[str, Any]:
    try:
        return schema().load(data)
    except SchemaError as error:
        abort(make_response(jsonify(error="validation failed", fields=error.messages), 400))


def validation_failed(messages: Any) -> Any:
    return jsonify(error="validation failed", fields=messages if isinstance(messages, dict) else {"_schema": messages}), 400


def dump(schema: type[Schema], value: Any, status: int = 200, *, many: bool = False) -> Any:
    return jsonify(schema(many=many).dump(value)), status


from web.api import views  # noqa: E402,F401  (registers the operations on api_bp)
