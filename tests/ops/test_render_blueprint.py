"""render.yaml against the Blueprint rules (fields and types per service type), and against the
code: every environment variable Opsdeck reads is declared, secrets are never committed."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from shared.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
BLUEPRINT = yaml.safe_load((ROOT / "render.yaml").read_text())

#: Blueprint fields by service type (https://render.com/docs/blueprint-spec), with their types.
COMMON = {"type": str, "name": str, "plan": str, "region": str}
RUNTIME_SERVICE = {
    **COMMON, "runtime": str, "buildCommand": str, "startCommand": str, "preDeployCommand": str,
    "envVars": list, "numInstances": int, "scaling": dict, "maxShutdownDelaySeconds": int,
    "autoDeploy": bool, "autoDeployTrigger": str, "branch": str, "rootDir": str, "buildFilter": dict,
    "disk": dict, "repo": str,
}  # fmt: skip
FIELDS: dict[str, dict[str, type]] = {
    "web": {**RUNTIME_SERVICE, "healthCheckPath": str, "domains": list, "headers": list, "routes": list},
    "pserv": RUNTIME_SERVICE,
    "worker": RUNTIME_SERVICE,
    "cron": {**RUNTIME_SERVICE, "schedule": str},
    "keyvalue": {**COMMON, "ipAllowList": list, "maxmemoryPolicy": str},
}
REQUIRED = {
    "web": {"type", "name", "runtime", "buildCommand", "startCommand"},
    "worker": {"type", "name", "runtime", "buildCommand", "startCommand"},
    "keyvalue": {"type", "name", "ipAllowList"},
}
RUNTIMES = {"python", "node", "ruby", "go", "rust", "elixir", "docker", "image", "static"}
MAXMEMORY = {"allkeys-lru", "volatile-lru", "allkeys-lfu", "volatile-lfu", "allkeys-random",
             "volatile-random", "volatile-ttl", "noeviction"}  # fmt: skip
ENV_SOURCES = {"value", "generateValue", "sync", "fromService", "fromDatabase", "fromGroup"}
#: Set by Render itself on every service.
PROVIDED_BY_RENDER = {"PORT", "RENDER_GIT_COMMIT"}
#: Read by the code but deliberately not declared, with the reason.
NOT_DECLARED = {
    "WORKER_ID": "defaults to the instance's host name, which Render makes unique per instance",
    "WORKER_START_PAUSED": "set by the agent for its own Dramatiq processes",
    "PROMETHEUS_MULTIPROC_DIR": "set by the agent for its own Dramatiq processes",
    "OPSDECK_URL": "read by the `opsdeck deploy` CLI in an operator's shell, not by a service",
    "OPSDECK_TOKEN": "read by the `opsdeck deploy` CLI in an operator's shell, not by a service",
    "PYTHONPATH": "read by `opsdeck load` to hand the project path to the processes it starts",
    **dict.fromkeys(
        (
            "BROKER_URL",
            "RABBITMQ_QUEUE_TYPE",
            "RABBITMQ_MANAGEMENT_URL",
            "RABBITMQ_MAX_HOLD",
            "OUTBOX_CLAIM_AFTER",
        ),
        "RabbitMQ as the broker: Render has no managed RabbitMQ, the blueprint keeps the Redis broker",
    ),
    **dict.fromkeys(
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            "OTEL_SERVICE_NAME",
            "OTEL_RESOURCE_ATTRIBUTES",
            "OTEL_TRACES_SAMPLER",
            "OTEL_TRACES_SAMPLER_ARG",
            "OTEL_SDK_DISABLED",
            "TRACE_URL_TEMPLATE",
        ),
        "tracing is off until an operator points it at a collector (docs/operations.md#tracing);"
        " a blueprint cannot know the collector's address",
    ),
    **dict.fromkeys(
        (
            "BANDIT_ALPHA_SCHEDULE",
            "BANDIT_CHECKPOINT_EVERY",
            "BANDIT_CHECKPOINTS_KEPT",
            "BANDIT_ROLLBACK_COOLDOWN",
            "BANDIT_ROLLBACK_MIN_SAMPLES",
            "BANDIT_ROLLBACK_SIGNIFICANCE",
        ),
        "the learner's tuning: the defaults are the documented production values (docs/coaching.md)",
    ),
}
SECRETS = {"JWT_SECRET", "METRICS_TOKEN", "SENTRY_DSN", "DASHBOARD_PASSWORD", "RENDER_API_KEY",
           "VERCEL_TOKEN", "LLM_API_KEY", "DEPLOY_WEBHOOK_SECRET"}  # fmt: skip


def services() -> list[dict[str, Any]]:
    return list(BLUEPRINT["services"])


def declared(service: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Env vars a service gets: its own and those of the groups it pulls in."""
    groups = {g["name"]: g for g in BLUEPRINT.get("envVarGroups", [])}
    out: dict[str, dict[str, Any]] = {}
    for entry in service.get("envVars", []):
        if "fromGroup" in entry:
            for var in groups[entry["fromGroup"]]["envVars"]:
                out[var["key"]] = var
        else:
            out[entry["key"]] = entry
    return out


def env_vars_read_by_code() -> set[str]:
    """Settings fields, names read literally through os.environ / os.getenv, and *_ENV constants."""
    names = {name.upper() for name in Settings.model_fields}
    literal = re.compile(r"""os\.(?:environ\.get|getenv)\(\s*["']([A-Z][A-Z0-9_]+)["']""")
    constant = re.compile(r"""^[A-Z_]+_ENV\s*=\s*["']([A-Z][A-Z0-9_]+)["']""", re.M)
    for package in ("coordinator", "worker", "dashboard", "shared"):
        for path in (ROOT / package).rglob("*.py"):
            text = path.read_text()
            names |= set(literal.findall(text)) | set(constant.findall(text))
    return names


def test_top_level_and_service_fields_follow_the_blueprint_spec():
    assert set(BLUEPRINT) <= {"services", "databases", "envVarGroups", "projects", "ungrouped", "previews"}
    names = [s["name"] for s in services()]
    assert len(names) == len(set(names))
    for service in services():
        kind = service["type"]
        assert kind in FIELDS, kind
        unknown = set(service) - set(FIELDS[kind])
        assert not unknown, f"{service['name']}: fields not allowed on {kind}: {unknown}"
        missing = REQUIRED.get(kind, set()) - set(service)
        assert not missing, f"{service['name']}: missing {missing}"
        for field, value in service.items():
            assert isinstance(value, FIELDS[kind][field]), f"{service['name']}.{field}"
        if "runtime" in service:
            assert service["runtime"] in RUNTIMES
        if "maxShutdownDelaySeconds" in service:
            assert 1 <= service["maxShutdownDelaySeconds"] <= 300
            assert service["plan"] != "free"  # Render rejects the field on free instances
        for entry in service.get("envVars", []):
            sources = ENV_SOURCES & set(entry)
            assert len(sources) == 1, f"{service['name']}: {entry}"
            assert ("key" in entry) != ("fromGroup" in entry), entry
            if "fromService" in entry:
                ref = entry["fromService"]
                assert {"type", "name"} <= set(ref)
                assert ("property" in ref) != ("envVarKey" in ref), ref
                assert any(s["name"] == ref["name"] and s["type"] == ref["type"] for s in services()), ref
    for group in BLUEPRINT.get("envVarGroups", []):
        for entry in group["envVars"]:
            assert set(entry) - {"key"} <= {"value", "generateValue", "sync"}, entry
            if "value" in entry:
                assert isinstance(entry["value"], str), f"{entry['key']}: values are strings"


def test_the_opsdeck_topology():
    by_name = {s["name"]: s for s in services()}
    coordinator, dashboard = by_name["opsdeck-coordinator"], by_name["opsdeck-dashboard"]
    worker, redis = by_name["opsdeck-worker"], by_name["opsdeck-redis"]
    assert coordinator["type"] == dashboard["type"] == "web"
    assert coordinator["healthCheckPath"] == dashboard["healthCheckPath"] == "/health/live"
    assert worker["type"] == "worker"
    assert worker["startCommand"] == "python -m worker"
    assert redis["type"] == "keyvalue"
    assert redis["maxmemoryPolicy"] == "noeviction"
    assert redis["ipAllowList"] == []
    shutdown = float(declared(worker)["SHUTDOWN_TIMEOUT"]["value"])
    assert worker["maxShutdownDelaySeconds"] > shutdown
    for service in (coordinator, dashboard, worker):
        env = declared(service)
        assert env["REDIS_URL"]["fromService"] == {
            "type": "keyvalue", "name": "opsdeck-redis", "property": "connectionString",
        }  # fmt: skip
        assert env["OPSDECK_ENV"]["value"] == "production"
        assert env["JWT_SECRET"] == {"key": "JWT_SECRET", "generateValue": True}
    assert declared(coordinator)["COORDINATOR_HOST"]["value"] == "0.0.0.0"
    assert declared(dashboard)["DASHBOARD_HOST"]["value"] == "0.0.0.0"
    assert declared(dashboard)["PORT"]["value"] == declared(dashboard)["DASHBOARD_PORT"]["value"]


def test_every_env_var_the_code_reads_is_declared():
    everything: set[str] = set()
    for service in services():
        everything |= set(declared(service))
    for group in BLUEPRINT.get("envVarGroups", []):
        everything |= {e["key"] for e in group["envVars"]}
    missing = env_vars_read_by_code() - everything - PROVIDED_BY_RENDER - set(NOT_DECLARED)
    assert not missing, f"declare in render.yaml (or explain in NOT_DECLARED): {sorted(missing)}"


def test_secrets_are_generated_or_entered_never_committed():
    for service in services():
        for key, entry in declared(service).items():
            if key in SECRETS or re.search(r"(SECRET|TOKEN|PASSWORD|API_KEY|DSN)$", key):
                assert "value" not in entry, f"{key} must use generateValue or sync: false"
