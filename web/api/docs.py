"""The OpenAPI 3 document (``/api/openapi.json``), generated with apispec from the same marshmallow
schemas the API validates with, and a small local page that renders it (``/api/docs``)."""

from __future__ import annotations

import re
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Blueprint, jsonify, render_template

from web.access import PUBLIC, allow
from web.api import OPERATIONS, Operation
from web.api.schemas import Error

docs_bp = Blueprint("api_docs", __name__, url_prefix="/api")

_PARAM = re.compile(r"<(?:(\w+):)?(\w+)>")
ERROR_TEXT = {400: "Validation failed (see `fields`)", 401: "No or unknown token", 403: "The token's user lacks the role",
              404: "Not found in your organisation", 409: "Not possible in the current state"}


def build_spec() -> dict[str, Any]:
    spec = APISpec(title="channelhub API", version="1", openapi_version="3.0.3", plugins=[MarshmallowPlugin()],
                   info={"description": "Automate what the admin UI does. Authenticate with a personal token: "
                                        "`Authorization: Bearer <token>` (create one under *API tokens*)."})
    spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer"})
    spec.components.schema("Error", schema=Error)
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        path = "/api/v1" + _PARAM.sub(lambda m: "{" + m.group(2) + "}", op.rule)
        paths.setdefault(path, {})[op.method.lower()] = _operation(op)
    for path, operations in paths.items():
        spec.path(path=path, operations=operations)
    return spec.to_dict()


def _operation(op: Operation) -> dict[str, Any]:
    item: dict[str, Any] = {"summary": op.summary, "operationId": op.endpoint, "tags": op.tags,
                            "security": [{"bearer": []}],
                            "description": (op.description + f"\n\nNeeds the **{op.level}** role.").strip()}
    parameters = [{"in": "path", "name": name, "required": True,
                   "schema": {"type": "integer" if conv == "int" else "string"}} for conv, name in _PARAM.findall(op.rule)]
    if op.query is not None:
        parameters.append({"in": "query", "schema": op.query})
    if parameters:
        item["parameters"] = parameters
    if op.body is not None:
        item["requestBody"] = {"required": True, "content": {"application/json": {"schema": op.body}}}
    ok: dict[str, Any] = {"description": "OK" if op.status == 200 else "Accepted" if op.status == 202 else "Created"}
    if op.response is not None:
        schema: Any = {"type": "array", "items": op.response} if op.many else op.response
        ok["content"] = {"application/json": {"schema": schema}}
    responses: dict[Any, Any] = {str(op.status): ok}
    for code in sorted({401, 403, *op.errors}):
        responses[str(code)] = {"description": ERROR_TEXT[code], "content": {"application/json": {"schema": Error}}}
    item["responses"] = responses
    return item


@docs_bp.route("/openapi.json")
@allow(PUBLIC)  # the description of the API is not a secret; every operation still needs a token
def openapi():  # type: ignore[no-untyped-def]
    return jsonify(build_spec())


@docs_bp.route("/docs")
@allow(PUBLIC)
def docs():  # type: ignore[no-untyped-def]
    return render_template("api/docs.html")
