"""The SDK against api/openapi.json: models, request arguments and routes cannot drift."""

from __future__ import annotations

import dataclasses
import inspect
import json
import re
from pathlib import Path

import pytest

import aegis
from aegis import _core, aclient, client, models

REPO = Path(__file__).resolve().parents[3]
DOC = json.loads((REPO / "api" / "openapi.json").read_text())
SCHEMAS = DOC["components"]["schemas"]


def schema_of(name: str) -> dict:
    """``Task``, or ``OutputEvent/output``: the oneOf variant tagged ``output``, tag removed."""
    if "/" not in name:
        return SCHEMAS[name]
    union, tag = name.split("/")
    for variant in SCHEMAS[union]["oneOf"]:
        for key in ("event", "type"):
            if variant["properties"].get(key, {}).get("enum") == [tag]:
                props = {k: v for k, v in variant["properties"].items() if k != key}
                required = [r for r in variant.get("required", []) if r != key]
                return {"properties": props, "required": required}
    raise AssertionError(f"no variant {tag!r} in schema {union}")


@pytest.mark.parametrize("cls", models.SCHEMA_MODELS, ids=lambda c: c.__name__)
def test_model_matches_its_schema(cls):
    schema = schema_of(cls.__schema__)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    props = set(schema.get("properties", {}))
    assert set(fields) == props, (
        f"{cls.__name__} vs schema {cls.__schema__}: missing from the model "
        f"{sorted(props - set(fields))}, not in the schema {sorted(set(fields) - props)}")
    required = set(schema.get("required", []))
    no_default = {n for n, f in fields.items()
                  if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    assert no_default == required, (
        f"{cls.__name__}: fields without a default {sorted(no_default)} must be exactly the "
        f"schema's required ones {sorted(required)}")


def test_every_schema_with_properties_that_is_an_answer_has_a_model():
    modelled = {c.__schema__.split("/")[0] for c in models.SCHEMA_MODELS}
    # Request bodies are keyword arguments (checked below), ApiError/ErrorBody are exceptions.
    requests = {"CreateApp", "CreateExec", "CreateLease", "CreateTask", "CreateWorkspace",
                "PublishRelease", "PullImage", "RenewLease", "ServeApp", "ApiError",
                "ErrorBody"}
    objects = {n for n, s in SCHEMAS.items() if "properties" in s or "oneOf" in s}
    objects -= {n for n, s in SCHEMAS.items()
                if "oneOf" in s and all(v.get("type") != "object" for v in s["oneOf"])}
    assert objects - modelled - requests == set()


def test_model_round_trips_an_answer():
    task = models.from_json(models.Task, {
        "id": "task-1", "state": "exited", "command": ["true"], "image": "debian", "vcpus": 1,
        "memory_mib": 512, "created_at": "t", "stdout_bytes": 0, "stderr_bytes": 0,
        "exit_code": 0, "a_field_from_a_newer_daemon": 1})
    assert task.exit_code == 0 and task.ended
    inst = models.from_json(models.Instance, {
        "id": "i", "name": "n", "state": "running", "created_at": "t", "last_active_at": "t",
        "active_connections": 0, "snapshot_cached": False,
        "stats": {"cold_boots": 1, "snapshot_restores": 0, "resumes": 0, "pauses": 0,
                  "terminations": 0},
        "endpoints": [{"guest_port": 80, "host_port": 1234, "protocol": "http",
                       "url": "http://127.0.0.1:1234"}],
        "target": {"command": ["x"], "expose": [{"guest_port": 80, "protocol": "http"}]}})
    assert inst.endpoints[0].host_port == 1234
    assert inst.target.expose[0] == aegis.PortSpec(80, "http")
    assert models.to_json(inst.target) == {
        "command": ["x"], "expose": [{"guest_port": 80, "protocol": "http"}]}


# Request bodies: every property is an argument of the method that sends it.
REQUEST_ARGS = [
    ("CreateTask", "create_task", {}),
    ("CreateExec", "start_exec", {}),
    ("CreateLease", "create_lease", {}),
    ("CreateApp", "create_app", {}),
    ("CreateWorkspace", "create_workspace", {}),
    ("PublishRelease", "publish_release", {"from": "from_dir"}),
    ("ServeApp", "serve_app", {}),
    ("PullImage", "pull_image", {}),
    ("RenewLease", "renew_lease", {}),
]


@pytest.mark.parametrize("schema,method,renamed", REQUEST_ARGS, ids=[r[0] for r in REQUEST_ARGS])
def test_request_body_properties_are_arguments(schema, method, renamed):
    params = set(inspect.signature(getattr(_core._Api, method)).parameters)
    props = {renamed.get(p, p) for p in SCHEMAS[schema]["properties"]}
    assert props <= params, f"{method} lacks arguments for {sorted(props - params)}"


def test_every_route_has_a_client_call():
    """Each route of the document is requested somewhere in the SDK's source."""
    source = "".join(inspect.getsource(mod) for mod in (_core, client, aclient))
    # PUT .../leases/{lease} is the same renewal as POST .../renew, which the SDK uses.
    aliases = {("PUT", "/v1/instances/{id}/leases/{lease}")}
    missing = []
    for path, ops in DOC["paths"].items():
        pattern = re.sub(r"\\\{[a-z_]+\\\}", r"\\{seg\\(\\w+\\)\\}", re.escape(path))
        for method in ops:
            if (method.upper(), path) in aliases:
                continue
            if not re.search(rf'Req\("{method.upper()}", f?"{pattern}"', source):
                missing.append(f"{method.upper()} {path}")
    assert missing == []


def test_errors_cover_every_code():
    codes = set(SCHEMAS["ErrorCode"]["enum"])
    from aegis.errors import ERRORS_BY_CODE
    assert set(ERRORS_BY_CODE) == codes
    e = aegis.errors.error_from_response(
        409, b'{"error": {"code": "conflict", "message": "task t-1 is running"}}', "DELETE x")
    assert isinstance(e, aegis.Conflict) and e.status == 409 and e.message == "task t-1 is running"
    e = aegis.errors.error_from_response(502, b"<html>bad gateway</html>", "GET /v1/status")
    assert isinstance(e, aegis.ProtocolError) and "bad gateway" in str(e)
