"""Offline checks of connecX's deployment files, run by deploy/validate (not on their own).

    python checks.py k8s RENDERED.yaml NAME      # KEDA resources + cross-resource rules
    python checks.py compose CONFIG.json BINS     # `docker compose config --format json` output
    python checks.py dashboard DASHBOARD.json     # Grafana: PromQL parses, metrics exist

Kubernetes' own kinds are validated against the Kubernetes schemas by kubernetes-validate before
this runs; KEDA's custom resources have no schema there, so they are checked here against a
structural schema of KEDA 2.x's ScaledObject and TriggerAuthentication (written for this
project from KEDA's documentation, so it covers the fields we use and rejects unknown ones).
Each command prints one line per check and exits 1 if any failed.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import yaml
from jsonschema import Draft7Validator

REPO = Path(__file__).resolve().parents[2]

SERVICES = {"booking-api": "api", "ipassan-sync": "worker", "salto-sync": "worker", "notifier": "worker"}
WORKERS = [name for name, kind in SERVICES.items() if kind == "worker"]
# The queue each worker consumes (docs/architecture.md, "Messaging topology"); the notifier also drains the dead letters.
WORKER_QUEUES = {"ipassan-sync": ["ipassan-sync"], "salto-sync": ["salto-sync"],
                 "notifier": ["notifier", "notifier.dead-letters"]}

# Every configuration key the services read (README "Configuration", docs/architecture.md, "Configuration and operation" and the settings
# structs). A CONNECX__ key outside this list is a typo the services would silently ignore.
KNOWN_KEYS = {
    "CONNECX__DATABASE__URL", "CONNECX__DATABASE__MAX_CONNECTIONS",
    "CONNECX__AMQP__URL", "CONNECX__AMQP__PREFETCH", "CONNECX__AMQP__DELIVERY_LIMIT",
    "CONNECX__RETRY__TIERS", "CONNECX__LOG__FORMAT", "CONNECX__LOG__LEVEL",
    "CONNECX__HTTP__HOST", "CONNECX__HTTP__PORT", "CONNECX__HTTP__HEADER_READ_TIMEOUT_SECS",
    "CONNECX__HTTP__REQUEST_TIMEOUT_SECS",
    "CONNECX__AUTH__JWT_SECRET", "CONNECX__AUTH__LEEWAY_SECS", "CONNECX__AUTH__ISSUER",
    "CONNECX__AUTH__AUDIENCE", "CONNECX__SMTP__ALLOW_PLAIN_AUTH",
    "CONNECX__OUTBOX__POLL_INTERVAL_MS", "CONNECX__OUTBOX__BATCH_SIZE", "CONNECX__OUTBOX__MAX_BACKOFF_MS",
    "CONNECX__OUTBOX__LINGER_MS",
    "CONNECX__OUTBOX__PUBLISH_TIMEOUT_SECS", "CONNECX__OUTBOX__RETENTION_HOURS",
    "CONNECX__SMTP__HOST", "CONNECX__SMTP__PORT", "CONNECX__SMTP__USERNAME", "CONNECX__SMTP__PASSWORD",
    "CONNECX__SMTP__TLS", "CONNECX__SMTP__FROM", "CONNECX__SMTP__TIMEOUT_SECS",
    "CONNECX__OPS__ALERT_EMAIL", "CONNECX__HEALTH__PORT", "CONNECX__HEALTH__HOST",
    "CONNECX__IPASSAN__BASE_URL", "CONNECX__IPASSAN__CLIENT_ID", "CONNECX__IPASSAN__CLIENT_SECRET",
    "CONNECX__IPASSAN__TIMEOUT_SECS",
    "CONNECX__SALTO__URL", "CONNECX__SALTO__AUTH_KIND", "CONNECX__SALTO__KEY", "CONNECX__SALTO__USERNAME",
    "CONNECX__SALTO__PASSWORD", "CONNECX__SALTO__TIMEOUT_SECS",
    "CONNECX__CLEANER__LOCAL_TIME", "CONNECX__CLEANER__TICK", "CONNECX__CLEANER__RECONCILE",
    "CONNECX__CLEANER__RECONCILE_DAYS", "CONNECX__CLEANER__BATCH_LEVELS",
    "CONNECX__CLEANER__CONCURRENCY_PER_SERVER", "CONNECX__CLEANER__BUILDINGS_AT_ONCE",
    "CONNECX__AMQP__DRAIN_TIMEOUT_SECS",
    "CONNECX__SECRETS__KEY", "CONNECX__SECRETS__PREVIOUS_KEYS",
    "CONNECX__CONNECTIONS__MAX_IN_FLIGHT", "CONNECX__CONNECTIONS__BREAKER_FAILURES",
    "CONNECX__CONNECTIONS__BREAKER_OPEN_SECS", "CONNECX__CONNECTIONS__OUTAGE_ALERT_SECS",
    "CONNECX__CONNECTIONS__SLOT_WAIT_MS",
    "CONNECX__BATCH__MAX_MESSAGES", "CONNECX__BATCH__MAX_RUNNING",
    "CONNECX__LIMITS__MAX_VISIT_HOURS", "CONNECX__LIMITS__MAX_DAYS_AHEAD",
    "CONNECX__LIMITS__MAX_LIVE_BOOKINGS", "CONNECX__LIMITS__WRITES_PER_MINUTE",
    "CONNECX__LIMITS__WRITE_BURST",
    "CONNECX__RETENTION__PIN_DAYS", "CONNECX__RETENTION__PERSONAL_DAYS", "CONNECX__RETENTION__EVERY_SECS",
}
SECRET_KEYS = {"CONNECX__DATABASE__URL", "CONNECX__AMQP__URL", "CONNECX__AUTH__JWT_SECRET",
               "CONNECX__SECRETS__KEY", "CONNECX__SECRETS__PREVIOUS_KEYS",
               "CONNECX__IPASSAN__CLIENT_SECRET", "CONNECX__SALTO__KEY", "CONNECX__SALTO__PASSWORD",
               "CONNECX__SMTP__USERNAME", "CONNECX__SMTP__PASSWORD"}
# What each service cannot start without (its settings' required fields). The deployment's
# default iPassan and Salto are optional: buildings may all have connections of their own.
REQUIRED_KEYS = {
    "booking-api": {"CONNECX__DATABASE__URL", "CONNECX__AMQP__URL", "CONNECX__AUTH__JWT_SECRET"},
    "ipassan-sync": {"CONNECX__DATABASE__URL", "CONNECX__AMQP__URL"},
    "salto-sync": {"CONNECX__DATABASE__URL", "CONNECX__AMQP__URL"},
    "notifier": {"CONNECX__DATABASE__URL", "CONNECX__AMQP__URL", "CONNECX__SMTP__HOST",
                 "CONNECX__SMTP__FROM", "CONNECX__OPS__ALERT_EMAIL"},
}


class Report:
    def __init__(self, title: str):
        self.title = title
        self.failures = 0
        self.passes = 0

    def check(self, ok: bool, what: str, detail: str = "") -> bool:
        if ok:
            self.passes += 1
            print(f"  ok    {what}")
        else:
            self.failures += 1
            print(f"  FAIL  {what}{': ' + detail if detail else ''}")
        return ok

    def done(self) -> int:
        print(f"  {self.title}: {self.passes} checks passed, {self.failures} failed")
        return 1 if self.failures else 0


# ── Queue arguments shipped to the broker ─────────────────────────────────────────────────────

def definitions() -> dict:
    return json.loads((REPO / "deploy/rabbitmq/definitions.json").read_text())


def parse_duration_ms(text: str) -> int:
    match = re.fullmatch(r"\s*(\d+)\s*(ms|s|m|h|d)\s*", text)
    if not match:
        raise ValueError(f"`{text}` is not a duration this check understands (e.g. 10s, 1m, 2h)")
    factor = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}[match.group(2)]
    return int(match.group(1)) * factor


def check_queue_arguments(report: Report, env: dict, where: str) -> None:
    """Retry tiers and delivery limit must equal the queues in definitions.json (or be unset)."""
    queues = {q["name"]: q["arguments"] for q in definitions()["queues"]}
    if "CONNECX__RETRY__TIERS" in env:
        tiers = [parse_duration_ms(t) for t in env["CONNECX__RETRY__TIERS"].split(",")]
        for worker_queue in ["ipassan-sync", "salto-sync", "notifier", "notifier.dead-letters", "booking-api.results"]:
            shipped = [queues[f"{worker_queue}.retry.{n}"]["x-message-ttl"]
                       for n in range(1, 100) if f"{worker_queue}.retry.{n}" in queues]
            report.check(shipped == tiers, f"{where}: CONNECX__RETRY__TIERS equals the TTLs of {worker_queue}.retry.* in definitions.json",
                         f"{tiers} vs {shipped}")
    if "CONNECX__AMQP__DELIVERY_LIMIT" in env:
        limit = int(env["CONNECX__AMQP__DELIVERY_LIMIT"])
        shipped = {q: a["x-delivery-limit"] for q, a in queues.items() if "x-delivery-limit" in a}
        report.check(all(v == limit for v in shipped.values()),
                     f"{where}: CONNECX__AMQP__DELIVERY_LIMIT equals x-delivery-limit in definitions.json",
                     f"{limit} vs {shipped}")


# ── KEDA custom resources ─────────────────────────────────────────────────────────────────────

STR = {"type": "string"}
INT0 = {"type": "integer", "minimum": 0}
META = {"type": "object", "required": ["name"],
        "properties": {"name": STR, "namespace": STR, "labels": {"type": "object", "additionalProperties": STR},
                       "annotations": {"type": "object", "additionalProperties": STR}}}
SCALED_OBJECT = {
    "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"], "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "keda.sh/v1alpha1"}, "kind": {"const": "ScaledObject"}, "metadata": META,
        "spec": {
            "type": "object", "required": ["scaleTargetRef", "triggers"], "additionalProperties": False,
            "properties": {
                "scaleTargetRef": {"type": "object", "required": ["name"], "additionalProperties": False,
                                   "properties": {"apiVersion": STR, "kind": STR, "name": STR,
                                                  "envSourceContainerName": STR}},
                "pollingInterval": {"type": "integer", "minimum": 1}, "cooldownPeriod": INT0,
                "initialCooldownPeriod": INT0, "idleReplicaCount": INT0, "minReplicaCount": INT0,
                "maxReplicaCount": {"type": "integer", "minimum": 1},
                "fallback": {"type": "object", "required": ["failureThreshold", "replicas"], "additionalProperties": False,
                             "properties": {"failureThreshold": {"type": "integer", "minimum": 1},
                                            "replicas": INT0, "behavior": STR}},
                "advanced": {"type": "object", "additionalProperties": False, "properties": {
                    "restoreToOriginalReplicaCount": {"type": "boolean"},
                    "horizontalPodAutoscalerConfig": {"type": "object", "additionalProperties": False,
                                                      "properties": {"name": STR, "behavior": {"type": "object"}}},
                    "scalingModifiers": {"type": "object"}}},
                "triggers": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "required": ["type", "metadata"], "additionalProperties": False,
                    "properties": {
                        "type": STR, "name": STR, "useCachedMetrics": {"type": "boolean"},
                        "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
                        "metadata": {"type": "object", "additionalProperties": STR},
                        "authenticationRef": {"type": "object", "required": ["name"], "additionalProperties": False,
                                              "properties": {"name": STR, "kind": {"enum": [
                                                  "TriggerAuthentication", "ClusterTriggerAuthentication"]}}}}}},
            }},
    },
}
TARGET_REFS = {"type": "array", "items": {"type": "object", "required": ["parameter", "name", "key"],
                                          "additionalProperties": False,
                                          "properties": {"parameter": STR, "name": STR, "key": STR}}}
TRIGGER_AUTHENTICATION = {
    "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"], "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "keda.sh/v1alpha1"}, "kind": {"const": "TriggerAuthentication"}, "metadata": META,
        "spec": {"type": "object", "minProperties": 1, "additionalProperties": False, "properties": {
            "secretTargetRef": TARGET_REFS, "configMapTargetRef": TARGET_REFS,
            "env": {"type": "array", "items": {"type": "object", "required": ["parameter", "name"],
                                               "additionalProperties": False,
                                               "properties": {"parameter": STR, "name": STR, "containerName": STR}}},
            "podIdentity": {"type": "object"}, "hashiCorpVault": {"type": "object"},
            "azureKeyVault": {"type": "object"}, "awsSecretManager": {"type": "object"},
            "gcpSecretManager": {"type": "object"}, "boundServiceAccountToken": {"type": "array"}}}},
}
# KEDA's rabbitmq scaler parameters.
RABBITMQ_METADATA = {
    "type": "object", "required": ["queueName", "mode", "value"], "additionalProperties": False,
    "properties": {
        "host": STR, "hostFromEnv": STR, "protocol": {"enum": ["amqp", "http", "auto"]},
        "mode": {"enum": ["QueueLength", "MessageRate"]}, "value": {"type": "string", "pattern": r"^\d+(\.\d+)?$"},
        "activationValue": {"type": "string", "pattern": r"^\d+(\.\d+)?$"}, "queueName": STR, "vhostName": STR,
        "useRegex": {"enum": ["true", "false"]}, "excludeUnacknowledged": {"enum": ["true", "false"]},
        "operation": {"enum": ["sum", "max", "avg"]}, "pageSize": STR, "timeout": STR,
        "unsafeSsl": {"enum": ["true", "false"]},
    },
}


def schema_errors(schema: dict, document: dict) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
            for e in Draft7Validator(schema).iter_errors(document)]


def labels_match(selector: dict, labels: dict) -> bool:
    wanted = selector.get("matchLabels", {})
    return bool(wanted) and all(labels.get(k) == v for k, v in wanted.items())


def container_port_names(container: dict) -> set:
    ports = container.get("ports", [])
    return {p.get("name") for p in ports} | {p.get("containerPort") for p in ports}


def pod_containers(pod_spec: dict) -> list:
    """The pod's init containers, then its app containers."""
    return [*pod_spec.get("initContainers", []), *pod_spec["containers"]]


# What `<service> migrate` reads (platform::config::MigrateSettings): the database and the logs.
MIGRATE_KEYS = {"CONNECX__DATABASE__URL", "CONNECX__DATABASE__MAX_CONNECTIONS", "CONNECX__LOG__FORMAT",
                "CONNECX__LOG__LEVEL"}


def check_migrate_init_container(report: Report, service: str, spec: dict, app: dict, configmaps: list) -> None:
    """Every Deployment migrates its schema in an initContainer `migrate` before the app starts:
    the app's image with `migrate` as its only argument, given the database URL and no other secret,
    as locked down as the app container."""
    inits = spec.get("initContainers", [])
    migrate = [c for c in inits if c.get("name") == "migrate"]
    if not report.check(len(migrate) == 1, f"Deployment/{service} has an initContainer `migrate`",
                        f"init containers: {[c.get('name') for c in inits]}"):
        return
    init = migrate[0]
    report.check(init.get("image") == app["image"] and init.get("imagePullPolicy") == app.get("imagePullPolicy"),
                 f"Deployment/{service} migrate runs the app container's image ({app['image']})", init.get("image", ""))
    report.check(init.get("args") == ["migrate"] and "command" not in init,
                 f"Deployment/{service} migrate runs `{service} migrate` (the image's entrypoint, args [migrate])",
                 f"command {init.get('command')}, args {init.get('args')}")
    report.check(init.get("restartPolicy") is None and not any(p in init for p in ("startupProbe", "readinessProbe", "livenessProbe")),
                 f"Deployment/{service} migrate is a plain init container (runs to completion before the app, no probes)")
    env = {e["name"]: e for e in init.get("env", [])}
    secret_refs = sorted(k for k, e in env.items() if "secretKeyRef" in e.get("valueFrom", {}))
    report.check(secret_refs == ["CONNECX__DATABASE__URL"],
                 f"Deployment/{service} migrate is given the database URL from the Secret and no other secret",
                 ", ".join(secret_refs))
    app_url = {e["name"]: e for e in app.get("env", [])}.get("CONNECX__DATABASE__URL", {})
    report.check(env.get("CONNECX__DATABASE__URL", {}).get("valueFrom") == app_url.get("valueFrom"),
                 f"Deployment/{service} migrate and the app use the same database")
    extra = sorted(k for k in env if k.startswith("CONNECX__") and k not in MIGRATE_KEYS)
    report.check(not extra, f"Deployment/{service} migrate sets only database and log keys", ", ".join(extra))
    report.check(not init.get("envFrom") or all(
        s.get("configMapRef", {}).get("name") in {c["metadata"]["name"] for c in configmaps} for s in init["envFrom"]),
                 f"Deployment/{service} migrate reads nothing but the ConfigMap besides its database URL")
    security = init.get("securityContext", {})
    report.check(security.get("allowPrivilegeEscalation") is False and security.get("readOnlyRootFilesystem") is True
                 and "ALL" in security.get("capabilities", {}).get("drop", []),
                 f"Deployment/{service} migrate runs read-only, without privilege escalation or capabilities")
    resources = init.get("resources", {})
    report.check(all(r in resources.get("requests", {}) for r in ("cpu", "memory"))
                 and "memory" in resources.get("limits", {}),
                 f"Deployment/{service} migrate sets cpu/memory requests and a memory limit")


def check_k8s(path: str, name: str) -> int:
    report = Report(f"kubernetes {name}")
    docs = [d for d in yaml.safe_load_all(Path(path).read_text()) if d]
    by_kind: dict[str, dict[str, dict]] = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], {})[doc["metadata"]["name"]] = doc
    deployments = by_kind.get("Deployment", {})
    configmaps = [c for n, c in by_kind.get("ConfigMap", {}).items() if n.startswith("connecx-config")]
    secrets = by_kind.get("Secret", {})
    scaled = by_kind.get("ScaledObject", {})
    auths = by_kind.get("TriggerAuthentication", {})
    hpas = by_kind.get("HorizontalPodAutoscaler", {})

    # KEDA resources against their structural schemas (Kubernetes kinds were done by kubernetes-validate).
    for so_name, so in scaled.items():
        errors = schema_errors(SCALED_OBJECT, so)
        for trigger in so.get("spec", {}).get("triggers", []):
            if trigger.get("type") == "rabbitmq":
                errors += [f"rabbitmq metadata {e}" for e in schema_errors(RABBITMQ_METADATA, trigger.get("metadata", {}))]
        report.check(not errors, f"ScaledObject/{so_name} matches KEDA's ScaledObject schema", "; ".join(errors))
        behavior = so.get("spec", {}).get("advanced", {}).get("horizontalPodAutoscalerConfig", {}).get("behavior")
        if behavior is not None:
            import kubernetes_validate  # the HPA behavior KEDA passes through is Kubernetes' own type
            fake = {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "x"},
                    "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "x"}, "maxReplicas": 2,
                             "behavior": behavior}}
            try:
                kubernetes_validate.validate(fake, "1.30.0", strict=True)
                ok, detail = True, ""
            except kubernetes_validate.ValidationError as error:
                ok, detail = False, str(error)
            report.check(ok, f"ScaledObject/{so_name} HPA behavior is a valid HorizontalPodAutoscalerBehavior", detail)
    for auth_name, auth in auths.items():
        errors = schema_errors(TRIGGER_AUTHENTICATION, auth)
        report.check(not errors, f"TriggerAuthentication/{auth_name} matches KEDA's schema", "; ".join(errors))

    # The configuration.
    report.check(len(configmaps) == 1, "one connecx-config ConfigMap")
    config = configmaps[0].get("data", {}) if configmaps else {}
    unknown = sorted(k for k in config if k.startswith("CONNECX__") and k not in KNOWN_KEYS)
    report.check(not unknown, "ConfigMap keys are all keys the services read", ", ".join(unknown))
    secretish = sorted(k for k in config if k in SECRET_KEYS or re.search(r"SECRET|PASSWORD", k))
    report.check(not secretish, "ConfigMap holds no secret (those come from the Secret)", ", ".join(secretish))
    check_queue_arguments(report, config, "ConfigMap")
    pool, prefetch = int(config.get("CONNECX__DATABASE__MAX_CONNECTIONS", 10)), int(config.get("CONNECX__AMQP__PREFETCH", 16))
    report.check(prefetch <= pool, f"prefetch ({prefetch}) fits the database pool ({pool}): a message in flight holds a connection")
    most = sum(h["spec"]["maxReplicas"] for h in hpas.values()) + sum(o["spec"].get("maxReplicaCount", 100) for o in scaled.values())
    print(f"  note  {name}: at the autoscalers' maxima, {most} pods × {pool} = {most * pool} PostgreSQL connections")

    # The services.
    for service, kind in SERVICES.items():
        deployment = deployments.get(service)
        if not report.check(deployment is not None, f"Deployment/{service} exists"):
            continue
        pod = deployment["spec"]["template"]
        pod_labels = pod["metadata"].get("labels", {})
        spec = pod["spec"]
        containers = spec["containers"]
        container = containers[0]
        report.check(labels_match(deployment["spec"]["selector"], pod_labels),
                     f"Deployment/{service} selector matches its pod labels")
        report.check(pod_labels.get("app.kubernetes.io/component") == kind, f"Deployment/{service} is labelled {kind}")
        report.check(container["image"].split(":")[0].endswith(f"connecx/{service}"),
                     f"Deployment/{service} runs the connecx/{service} image", container["image"])
        report.check("replicas" not in deployment["spec"],
                     f"Deployment/{service} leaves its replica count to its autoscaler")
        pod_security = spec.get("securityContext", {})
        security = container.get("securityContext", {})
        report.check(pod_security.get("runAsNonRoot") is True and security.get("allowPrivilegeEscalation") is False
                     and security.get("readOnlyRootFilesystem") is True,
                     f"Deployment/{service} runs as non-root, read-only, without privilege escalation")
        resources = container.get("resources", {})
        report.check(all(r in resources.get("requests", {}) for r in ("cpu", "memory"))
                     and "memory" in resources.get("limits", {}),
                     f"Deployment/{service} sets cpu/memory requests and a memory limit")
        ports = container_port_names(container)
        expected_port = int(config.get("CONNECX__HTTP__PORT" if kind == "api" else "CONNECX__HEALTH__PORT", 0))
        declared = {p["containerPort"] for p in container.get("ports", [])}
        report.check(expected_port in declared,
                     f"Deployment/{service} declares the port its probes listen on ({expected_port}, from the ConfigMap)",
                     f"declared {sorted(declared)}")
        for probe_name, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
            probe = container.get(probe_name, {}).get("httpGet", {})
            report.check(probe.get("path") == path and probe.get("port") in ports,
                         f"Deployment/{service} {probe_name} asks {path} on a declared port", str(probe))
        startup = container.get("startupProbe", {})
        startup_port = (startup.get("httpGet") or startup.get("tcpSocket") or {}).get("port")
        report.check(startup_port in ports, f"Deployment/{service} startupProbe asks a declared port")
        check_migrate_init_container(report, service, spec, container, configmaps)
        grace = spec.get("terminationGracePeriodSeconds", 30)
        report.check(grace > 30, f"Deployment/{service} grace period ({grace}s) exceeds the 30 s drain of in-flight work")

        # Where every environment variable comes from.
        env = {e["name"]: e for e in container.get("env", [])}
        unknown = sorted(k for k in env if k.startswith("CONNECX__") and k not in KNOWN_KEYS)
        report.check(not unknown, f"Deployment/{service} sets only keys the services read", ", ".join(unknown))
        plain_secrets = sorted(k for k, e in env.items() if k in SECRET_KEYS and "value" in e)
        report.check(not plain_secrets, f"Deployment/{service} takes its secrets from a Secret", ", ".join(plain_secrets))
        refs_config = any(s.get("configMapRef", {}).get("name") in {c["metadata"]["name"] for c in configmaps}
                          for s in container.get("envFrom", []))
        report.check(refs_config, f"Deployment/{service} reads the ConfigMap")
        provided = set(config) | set(env)
        if config.get("CONNECX__SALTO__AUTH_KIND") == "key" and service == "salto-sync":
            provided_required = REQUIRED_KEYS[service] | {"CONNECX__SALTO__KEY"}
        else:
            provided_required = REQUIRED_KEYS[service]
        missing = sorted(provided_required - provided)
        report.check(not missing, f"Deployment/{service} is given every key it needs", ", ".join(missing))
        for each in pod_containers(spec):
            for entry in each.get("env", []):
                ref = entry.get("valueFrom", {}).get("secretKeyRef")
                if not ref or not secrets:
                    continue
                secret = secrets.get(ref["name"])
                present = secret is not None and ref["key"] in {**secret.get("data", {}), **secret.get("stringData", {})}
                report.check(present or ref.get("optional", False),
                             f"Deployment/{service} {each['name']}: {entry['name']} ← Secret {ref['name']}/{ref['key']} exists",
                             "missing and not optional")

        pdbs = [p for p in by_kind.get("PodDisruptionBudget", {}).values() if labels_match(p["spec"]["selector"], pod_labels)]
        report.check(len(pdbs) == 1, f"Deployment/{service} has one PodDisruptionBudget")

        if kind == "worker":
            report.check(not any(h["spec"]["scaleTargetRef"]["name"] == service for h in hpas.values()),
                         f"Deployment/{service} is not also under a plain HPA (KEDA owns its HPA)")
            objects = [s for s in scaled.values() if s["spec"]["scaleTargetRef"]["name"] == service]
            if not report.check(len(objects) == 1, f"Deployment/{service} has one KEDA ScaledObject"):
                continue
            so = objects[0]["spec"]
            low, high = so.get("minReplicaCount", 0), so.get("maxReplicaCount", 100)
            report.check(low >= 1 and high > low, f"ScaledObject/{service} scales between {low} and {high} (min 1, never to zero)")
            triggers = [t for t in so["triggers"] if t["type"] == "rabbitmq"]
            queues = [t["metadata"].get("queueName") for t in triggers]
            report.check(queues and queues[0] == service and set(queues) <= set(WORKER_QUEUES[service]),
                         f"ScaledObject/{service} scales on its own queue length", str(queues))
            report.check(all(t["metadata"].get("mode") == "QueueLength" for t in triggers),
                         f"ScaledObject/{service} triggers use mode QueueLength")
            for trigger in triggers:
                auth = auths.get(trigger.get("authenticationRef", {}).get("name"))
                if not report.check(auth is not None or "host" in trigger["metadata"] or "hostFromEnv" in trigger["metadata"],
                                    f"ScaledObject/{service} trigger {trigger.get('name')} can reach RabbitMQ"):
                    continue
                if auth and secrets:
                    for ref in auth["spec"].get("secretTargetRef", []):
                        secret = secrets.get(ref["name"])
                        report.check(secret is not None and ref["key"] in secret.get("data", {}),
                                     f"TriggerAuthentication/{auth['metadata']['name']} {ref['parameter']} ← Secret {ref['name']}/{ref['key']} exists")
        else:
            report.check(not any(s["spec"]["scaleTargetRef"]["name"] == service for s in scaled.values()),
                         f"Deployment/{service} is not under KEDA")
            mine = [h for h in hpas.values() if h["spec"]["scaleTargetRef"]["name"] == service
                    and h["spec"]["scaleTargetRef"]["kind"] == "Deployment"]
            if report.check(len(mine) == 1, f"Deployment/{service} has one HPA"):
                hpa = mine[0]["spec"]
                cpu = [m for m in hpa.get("metrics", []) if m.get("type") == "Resource" and m["resource"]["name"] == "cpu"]
                report.check(bool(cpu) and hpa.get("minReplicas", 1) >= 1 and hpa["maxReplicas"] > hpa.get("minReplicas", 1),
                             f"HPA/{service} scales on CPU between {hpa.get('minReplicas', 1)} and {hpa['maxReplicas']}")
            services = [s for s in by_kind.get("Service", {}).values()
                        if s["spec"].get("selector") and all(pod_labels.get(k) == v for k, v in s["spec"]["selector"].items())]
            report.check(len(services) == 1 and services[0]["spec"].get("type", "ClusterIP") == "ClusterIP"
                         and all(p.get("targetPort") in ports for p in services[0]["spec"]["ports"]),
                         f"Service/{service} (ClusterIP) selects its pods and targets a declared port")

    if not secrets:
        needed = sorted({f"{e['valueFrom']['secretKeyRef']['name']}/{e['valueFrom']['secretKeyRef']['key']}"
                         + (" (optional)" if e["valueFrom"]["secretKeyRef"].get("optional") else "")
                         for d in deployments.values() for c in pod_containers(d["spec"]["template"]["spec"])
                         for e in c.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})})
        print(f"  note  {name} ships no Secret; an overlay must provide: {', '.join(needed)}")
    return report.done()


# ── docker-compose.yml ────────────────────────────────────────────────────────────────────────

def check_compose(config_path: str, binaries: str) -> int:
    report = Report("docker-compose.yml")
    config = json.loads(Path(config_path).read_text())
    services = config["services"]
    known_binaries = set(binaries.split(",")) if binaries else set()
    expected = ["postgres", "rabbitmq", "mailpit", "ipassan-sim", "salto-sim", *SERVICES]
    missing = [s for s in expected if s not in services]
    report.check(not missing, "compose runs PostgreSQL, RabbitMQ, Mailpit, both simulators and the four services",
                 ", ".join(missing))
    for name, service in services.items():
        build = service.get("build")
        if build:
            target = build.get("args", {}).get("SERVICE")
            report.check(build.get("dockerfile") == "deploy/Dockerfile" and target == name,
                         f"{name} is built from deploy/Dockerfile with SERVICE={name}")
            if known_binaries:
                report.check(target in known_binaries, f"{name}: SERVICE={target} is a binary of the workspace",
                             f"binaries: {sorted(known_binaries)}")
        for dependency, how in service.get("depends_on", {}).items():
            if how.get("condition") == "service_healthy":
                report.check("healthcheck" in services.get(dependency, {}),
                             f"{name} waits for {dependency}, which has a healthcheck")
        for volume in service.get("volumes", []):
            if volume.get("type") == "bind":
                report.check(Path(volume["source"]).exists(), f"{name} mounts {volume['source']}, which exists")
        environment = service.get("environment", {}) or {}
        unknown = sorted(k for k in environment if k.startswith("CONNECX__") and k not in KNOWN_KEYS)
        report.check(not unknown, f"{name} sets only configuration keys the services read", ", ".join(unknown))
        if name in SERVICES:
            check_queue_arguments(report, environment, name)
    for name in SERVICES:
        service = services.get(name, {})
        report.check("healthcheck" in service, f"{name} has a healthcheck")
        waits = service.get("depends_on", {})
        report.check(all(waits.get(d, {}).get("condition") == "service_healthy" for d in ("postgres", "rabbitmq")),
                     f"{name} starts after PostgreSQL and RabbitMQ are healthy")
        missing = sorted(REQUIRED_KEYS[name] - set(service.get("environment", {}) or {}))
        report.check(not missing, f"{name} is given every key it needs", ", ".join(missing))
    for name in WORKERS:
        service = services.get(name, {})
        report.check(not service.get("ports") and "container_name" not in service,
                     f"{name} can be scaled (no host ports, no container_name)")
        report.check("CONNECX__HEALTH__PORT" in (service.get("environment") or {}),
                     f"{name} opens its health/metrics port")
    rabbit_mounts = [v.get("source", "") for v in services.get("rabbitmq", {}).get("volumes", [])]
    report.check(any(s.endswith("deploy/rabbitmq/definitions.json") for s in rabbit_mounts),
                 "RabbitMQ loads deploy/rabbitmq/definitions.json")
    report.check("management" in services.get("rabbitmq", {}).get("image", ""), "RabbitMQ is the management image")

    # The simulators' seeds agree with what the services are told.
    seed = json.loads((REPO / "deploy/compose/ipassan-seed.json").read_text())
    ipassan_env = services.get("ipassan-sync", {}).get("environment", {})
    clients = {(c["client_id"], c["client_secret"]) for c in seed.get("clients", [])}
    report.check((ipassan_env.get("CONNECX__IPASSAN__CLIENT_ID"), ipassan_env.get("CONNECX__IPASSAN__CLIENT_SECRET")) in clients,
                 "ipassan-sync's client id and secret are a client of ipassan-sim's seed")
    seeder = services.get("seed", {}).get("environment", {})
    jwt = services.get("booking-api", {}).get("environment", {}).get("CONNECX__AUTH__JWT_SECRET", "")
    report.check(seeder.get("JWT_SECRET") == jwt and len(jwt.encode()) >= 32,
                 "the seeder signs with booking-api's JWT secret (at least 32 bytes)")
    return report.done()


# ── Grafana dashboard ─────────────────────────────────────────────────────────────────────────

def emitted_metrics() -> set:
    names = set()
    for source in list((REPO / "services").rglob("*.rs")) + list((REPO / "shared").rglob("*.rs")):
        for match in re.finditer(r"metrics::(?:counter|gauge|histogram)!\(\s*\"([a-z_:]+)\"", source.read_text()):
            names.add(match.group(1))
    return names


def check_dashboard(path: str) -> int:
    import promql_parser

    report = Report("grafana dashboard")
    dashboard = json.loads(Path(path).read_text())
    report.check(bool(dashboard.get("uid")) and bool(dashboard.get("title")), "dashboard has a uid and a title")
    panels = dashboard.get("panels", [])
    ids = [p["id"] for p in panels]
    report.check(len(ids) == len(set(ids)), "panel ids are unique")
    emitted = emitted_metrics()
    report.check(bool(emitted), f"found the metrics the Rust code emits ({len(emitted)})")
    used = set()
    for panel in panels:
        if panel["type"] == "row":
            continue
        report.check(panel.get("datasource", {}).get("uid") == "${datasource}",
                     f"panel '{panel['title']}' uses the dashboard's data source variable")
        for target in panel.get("targets", []):
            expression = target["expr"]
            concrete = expression.replace("$__rate_interval", "5m").replace("$queue", ".*")
            try:
                promql_parser.parse(concrete)
                ok, detail = True, ""
            except Exception as error:  # the parser raises its own error types
                ok, detail = False, str(error)
            report.check(ok, f"panel '{panel['title']}' {target['refId']}: PromQL parses", detail)
            for metric in re.findall(r"\b((?:connecx|http|booking)_[a-z_]+)", expression):
                used.add(re.sub(r"_(bucket|count|sum)$", "", metric))
    for metric in sorted(used):
        report.check(metric in emitted, f"metric {metric} is emitted by the services")
    for metric in ["connecx_messages_handled_total", "connecx_messages_retried_total",
                   "connecx_messages_dead_lettered_total", "connecx_handler_seconds",
                   "http_requests_total", "http_request_duration_seconds"]:
        report.check(metric in used, f"dashboard shows {metric}")
    return report.done()


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    sys.exit({"k8s": check_k8s, "compose": check_compose, "dashboard": check_dashboard}[command](*args))
