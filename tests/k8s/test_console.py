"""The review console in every overlay: its Deployment, network policy and rights, against what console/ does.

The console (``k8s/base/console.yaml``) is held to the stages' invariants where they apply (non-root, read-only root,
resources, probes on its health endpoints), reached only from the ingress controller, and allowed the Kafka topics,
S3 objects and Milvus privileges its code uses, no more. The expectations are tables here, named by the registries'
constants and the code that needs each right; ``test_the_tables_cover_every_topic_the_code_names`` keeps the Kafka
table honest against the console's modules and the accountability code they call.
"""

from __future__ import annotations

import ast
import copy
import json
import os
from pathlib import Path

import pytest

from runtime.settings import AuditSettings, S3Settings
from schemas import topics
from schemas.topics import ALERTS, AUDIT, AUDIT_REQUESTS, CONFIRMED, DEPLOYMENTS, REVIEWS
from tests.k8s.manifests import (
    KUSTOMIZATIONS,
    ROOT,
    by_name,
    config_env,
    generator,
    main_container,
    matches,
    milvus_roles,
    ns,
    of_kind,
    pod_labels,
    pod_spec,
    render,
    selects_pod,
    stage_deployments,
    workloads,
)
from tests.k8s.test_acls import ALLOWED_OPERATIONS, grants, users
from tests.k8s.test_custom_resources import errors as custom_resource_errors

NAME = "vigil-console"
PRINCIPAL = "vigil-console"
STATE_CLAIM = "vigil-console-state"
# The ingress controller's namespace, matched by the label Kubernetes puts on every namespace (k8s/README.md).
NAMESPACE_LABEL = "kubernetes.io/metadata.name"
DNS_PORTS = {53}
SERVICE_PORTS = {9092, 9093, 8333, 9000, 443, 19530}  # Kafka, S3, Milvus (base and production), as for the stages

# What the console reads and writes in Kafka, and where in the code. It reads by assignment (runtime.kafka.EventReader:
# no consumer group), so it joins none.
KAFKA_READS = {
    ALERTS: "console.reviews.ReviewDesk._follow: the alerts to review",
    REVIEWS: "console.reviews.ReviewDesk._follow: review state is the fold of the decisions",
    CONFIRMED: "console.reviews.ReviewDesk._follow: which confirmed alerts are already published",
    AUDIT: "accountability.audit.show and verify (the audit page)",
    AUDIT_REQUESTS: "accountability.audit.show (pending requests) and verify (request digests)",
    DEPLOYMENTS: "accountability.deployments.Deployments.list/get (listing, ending a deployment)",
}
KAFKA_WRITES = {
    REVIEWS: "console.reviews.ReviewDesk.decide",
    CONFIRMED: "console.reviews.ReviewDesk._publish",
    AUDIT_REQUESTS: "accountability.audit.AuditLog.append: every console action, enrolment and removal included",
    DEPLOYMENTS: "accountability.deployments.Deployments.start/end",
}
# What it may do in S3, by resource: alert evidence to review (console.routes.alert_image); enrolled photos to show,
# write (vigil.enroll.Enroller._store, approving a proposal) and delete (accountability.watchlist.remove_person, and
# enrolment's rollback); the audit anchors, every version (accountability.audit.check_anchors).
BUCKETS, ANCHORS = S3Settings(), AuditSettings().anchor_bucket
S3_GRANTS = {
    f"arn:aws:s3:::{BUCKETS.evidence_bucket}/alerts/*": {"s3:GetObject"},
    f"arn:aws:s3:::{BUCKETS.watchlist_bucket}/*": {"s3:GetObject", "s3:PutObject", "s3:DeleteObject"},
    f"arn:aws:s3:::{ANCHORS}/*": {"s3:GetObject", "s3:GetObjectVersion"},
    f"arn:aws:s3:::{ANCHORS}": {"s3:ListBucketVersions"},
}
# Milvus: enrolment (ensure_collection, the near-duplicate search, add) and removal (query, delete, compact).
MILVUS_WRITES = {"Insert", "Delete", "Compaction", "CreateIndex"}


def console(docs: list[dict]) -> dict:
    (deployment,) = [d for d in of_kind(docs, "Deployment") if d["metadata"]["name"] == NAME]
    return deployment


@pytest.fixture(params=KUSTOMIZATIONS)
def docs(request) -> list[dict]:
    return render(request.param)


def console_settings(docs: list[dict], deployment: dict, monkeypatch, tmp_path):
    """The settings the console's container loads (its ConfigMap, Secret template and env; placeholders for a login)."""
    from runtime.settings import VigilSettings

    with monkeypatch.context() as m:
        for key in [k for k in os.environ if k.startswith("VIGIL_")]:
            m.delenv(key)
        m.setenv("VIGIL_HOME", str(tmp_path))
        env = {"VIGIL_KAFKA__SASL_USERNAME": PRINCIPAL, "VIGIL_KAFKA__SASL_PASSWORD": "from-the-secret", **config_env(docs, deployment)}
        for key, value in env.items():
            if key.startswith("VIGIL_"):
                m.setenv(key, value)
        return VigilSettings()


# --------------------------------------------------------------------------------------------
# The Deployment


def test_the_console_runs_once_as_its_own_principal(docs):
    deployment = console(docs)
    container = main_container(deployment)
    assert [*container["command"], *container["args"]] == ["vigil", "console"]
    assert deployment["spec"]["replicas"] == 1, "one console writes review decisions (console/reviews.py)"
    assert deployment["spec"]["strategy"]["type"] == "Recreate", "two consoles would overlap during a roll"
    refs = [s["secretRef"]["name"] for s in container["envFrom"] if "secretRef" in s]
    assert refs == [f"{PRINCIPAL}-credentials"]
    assert PRINCIPAL in {p.name for p in generator().principals()}
    assert deployment not in stage_deployments(docs) and deployment in workloads(docs)


def test_the_console_pod_is_locked_down(docs):
    deployment = console(docs)
    spec = pod_spec(deployment)
    assert spec["automountServiceAccountToken"] is False, "the console needs no Kubernetes API"
    pod_sc = spec["securityContext"]
    assert pod_sc["runAsNonRoot"] is True and pod_sc["runAsUser"] != 0
    assert pod_sc["seccompProfile"]["type"] == "RuntimeDefault"
    volumes = {v["name"]: v for v in spec["volumes"]}
    for c in [*spec.get("initContainers", []), *spec["containers"]]:
        sc, where = c["securityContext"], f"{NAME}/{c['name']}"
        assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False, where
        assert sc.get("runAsNonRoot", pod_sc["runAsNonRoot"]) is True, where
        assert "ALL" in sc["capabilities"]["drop"], where
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(c["resources"][kind]), f"{where}: {kind}"
        mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
        assert "emptyDir" in volumes[mounts["/tmp"]], f"{where}: /tmp is not an emptyDir"


def test_the_console_keeps_its_state_on_its_own_volume(docs, monkeypatch, tmp_path):
    deployment = console(docs)
    settings = console_settings(docs, deployment, monkeypatch, tmp_path)
    mounts = {m["mountPath"]: m["name"] for m in main_container(deployment)["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_spec(deployment)["volumes"]}
    state = volumes[mounts[str(settings.console.state_dir)]]
    assert state["persistentVolumeClaim"]["claimName"] == STATE_CLAIM, "users and proposals must survive a restart"
    assert (ns(deployment), STATE_CLAIM) in by_name(docs, "PersistentVolumeClaim")


def test_the_console_is_probed_on_the_port_it_serves(docs, monkeypatch, tmp_path):
    """console/routes.py serves /healthz (alive) and /readyz (review state caught up) on console.port."""
    deployment = console(docs)
    settings = console_settings(docs, deployment, monkeypatch, tmp_path)
    container = main_container(deployment)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert list(ports.values()) == [settings.console.port]
    assert settings.console.host == "0.0.0.0", "loopback would be unreachable from the kubelet and the Service"
    for probe, path in (("startupProbe", "/healthz"), ("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = container[probe]["httpGet"]
        assert get["path"] == path, f"{probe}: {get['path']}"
        assert ports.get(get["port"], get["port"]) == settings.console.port, f"{probe}: port {get['port']}"
    (service,) = [s for s in of_kind(docs, "Service") if matches({"matchLabels": s["spec"]["selector"]}, pod_labels(deployment))]
    assert [ports.get(p["targetPort"], p["targetPort"]) for p in service["spec"]["ports"]] == [settings.console.port]
    for ingress in of_kind(docs, "Ingress"):
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                assert backend["name"] == service["metadata"]["name"]
                assert backend["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}


def test_the_console_settings_are_safe_behind_the_ingress(docs, monkeypatch, tmp_path):
    deployment = console(docs)
    settings = console_settings(docs, deployment, monkeypatch, tmp_path)
    assert settings.console.secure_cookies is True, "TLS ends at the ingress: the cookie must still be Secure"
    assert settings.console.trusted_proxies, "the ingress controller's addresses"
    assert not {"0.0.0.0/0", "::/0"} & set(settings.console.trusted_proxies), "anyone could name a user by header"


def test_the_console_can_enrol(docs, monkeypatch, tmp_path):
    """Approving a proposal runs vigil.enroll.Enroller in the console: the image's weights, on the CPUs it may use."""
    deployment = console(docs)
    settings = console_settings(docs, deployment, monkeypatch, tmp_path)
    embed = next(d for d in stage_deployments(docs) if d["metadata"]["name"] == "vigil-embed")
    assert settings.models.weights_dir == console_settings(docs, embed, monkeypatch, tmp_path).models.weights_dir
    limit = main_container(deployment)["resources"]["limits"]
    assert "nvidia.com/gpu" not in limit and settings.models.device in ("cpu", "auto")
    assert settings.models.torch_threads is not None and settings.models.torch_threads <= float(limit["cpu"])


def test_production_gives_the_console_the_stages_kafka_trust():
    """Production's config sets SASL_SSL and SSL_CERT_FILE for every pod; the console gets the init container that writes it."""
    docs = render("overlays/production")
    deployment = console(docs)
    env = config_env(docs, deployment)
    assert env["VIGIL_KAFKA__SECURITY_PROTOCOL"] == "SASL_SSL" and env["VIGIL_S3__SECURE"] == "true"
    stage = stage_deployments(docs)[0]
    assert pod_spec(deployment)["initContainers"] == pod_spec(stage)["initContainers"]
    assert "/tmp/ca-bundle.pem" in pod_spec(deployment)["initContainers"][0]["args"][0]
    assert env["SSL_CERT_FILE"] == "/tmp/ca-bundle.pem"


# --------------------------------------------------------------------------------------------
# Network policy


def policies_of(docs: list[dict], labels: dict) -> list[dict]:
    return [p for p in of_kind(docs, "NetworkPolicy") if selects_pod(p, labels)]


def test_only_the_ingress_controller_reaches_the_console(docs):
    deployment = console(docs)
    port = main_container(deployment)["ports"][0]["containerPort"]
    rules = [rule for p in policies_of(docs, pod_labels(deployment)) for rule in p["spec"].get("ingress", [])]
    assert rules, "nothing may reach the console: the ingress controller must"
    for rule in rules:
        assert {p["port"] for p in rule["ports"]} == {port}, rule
        assert rule.get("from"), "an ingress rule without `from` admits everyone"
        for peer in rule["from"]:
            assert set(peer) == {"namespaceSelector"}, f"only a namespace (the ingress controller's): {peer}"
            assert set(peer["namespaceSelector"]) == {"matchLabels"}
            assert set(peer["namespaceSelector"]["matchLabels"]) == {NAMESPACE_LABEL}


def test_the_console_reaches_dns_kafka_s3_and_milvus_only(docs):
    deployment = console(docs)
    egress = [rule for p in policies_of(docs, pod_labels(deployment)) for rule in p["spec"].get("egress", [])]
    ports = set()
    for rule in egress:
        assert rule.get("to") and rule.get("ports"), f"an egress rule open to everything: {rule}"
        assert not any("ipBlock" in peer for peer in rule["to"]), rule
        ports |= {p["port"] for p in rule["ports"]}
    assert DNS_PORTS <= ports and ports <= DNS_PORTS | SERVICE_PORTS, ports
    env = config_env(docs, deployment)
    for endpoint in (env["VIGIL_KAFKA__BOOTSTRAP"], env["VIGIL_S3__ENDPOINT"], env["VIGIL_MILVUS__URI"]):
        assert int(endpoint.rsplit(":", 1)[1].split("/")[0]) in ports, f"{endpoint}: its port is not open"
    # The same services as the stages, in every overlay (production replaces both the same way).
    (stages,) = [p for p in of_kind(docs, "NetworkPolicy") if p["metadata"]["name"] == "vigil-stages"]
    assert egress == stages["spec"]["egress"]


def test_the_local_stack_admits_the_console_and_the_tasks():
    """In the local overlay Kafka, S3 and Milvus run in the namespace behind their own ingress policy."""
    docs = render("overlays/local")
    clients = [d for d in workloads(docs) if pod_labels(d).get("vigil.io/role") in ("stage", "job", "console")]
    assert console(docs) in clients and any(d["kind"] == "CronJob" for d in clients)
    for server in [d for d in of_kind(docs, "Deployment") if "vigil.io/dependency" in pod_labels(d)]:
        port = main_container(server)["ports"][0]["containerPort"]
        for client in clients:
            admitted = [rule for p in policies_of(docs, pod_labels(server)) for rule in p["spec"].get("ingress", [])
                        if port in {x["port"] for x in rule["ports"]}
                        and any(set(peer) == {"podSelector"} and matches(peer["podSelector"], pod_labels(client))
                                for peer in rule["from"])]
            assert admitted, f"{server['metadata']['name']}:{port} refuses {client['metadata']['name']}"


# --------------------------------------------------------------------------------------------
# Rights: Kafka, S3, Milvus


def test_the_console_kafka_acls_are_what_its_code_uses():
    granted = grants(users()[PRINCIPAL])
    expected = ({("topic", t.name, "Read") for t in KAFKA_READS} | {("topic", t.name, "Write") for t in KAFKA_WRITES})
    assert granted == expected, f"missing {expected - granted}, extra {granted - expected}"
    assert not [g for g in granted if g[0] == "group"], "the console reads by assignment: no consumer group"
    assert {op for _, _, op in granted} <= ALLOWED_OPERATIONS


def _closure(start: list[Path], packages: tuple[str, ...]) -> set[Path]:
    """The modules of ``packages`` that ``start`` imports, directly or not (imports inside functions included)."""
    def module_file(name: str) -> Path | None:
        base = ROOT / Path(*name.split("."))
        return next((p for p in (base.with_suffix(".py"), base / "__init__.py") if p.is_file()), None)

    seen, todo = set(), list(start)
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for name in names:
                found = module_file(name) if name.split(".")[0] in packages else None
                if found is not None:
                    todo.append(found)
    return seen


def test_the_tables_cover_every_topic_the_code_names():
    """Every topic constant named by console/ and the accountability and enrolment code it calls is in the tables."""
    modules = _closure(sorted((ROOT / "console").glob("*.py")), ("console", "accountability", "vigil"))
    assert ROOT / "vigil" / "enroll.py" in modules and ROOT / "accountability" / "deployments.py" in modules
    named = set()
    for path in modules:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "schemas.topics":
                named |= {a.name for a in node.names if isinstance(getattr(topics, a.name, None), topics.TopicSpec)}
    assert {getattr(topics, n) for n in named} == set(KAFKA_READS) | set(KAFKA_WRITES), sorted(named)


def test_the_console_s3_policy_is_what_its_code_uses():
    policy = json.loads(generator().S3_POLICIES_FILE.read_text())[PRINCIPAL]
    listing, *rest = policy["Statement"]
    assert set(listing["Action"]) == {"s3:ListBucket", "s3:GetBucketLocation"}  # ObjectStore.list_keys, the start-up check
    granted: dict[str, set[str]] = {}
    for statement in rest:
        assert statement["Effect"] == "Allow" and "Condition" not in statement
        for resource in statement["Resource"]:
            granted.setdefault(resource, set()).update(statement["Action"])
    assert granted == S3_GRANTS


def test_watchlist_writers_are_the_same_in_s3_and_milvus():
    """Whoever may put or delete enrolment photos holds the Milvus writer role, and the reverse."""
    policies = json.loads(generator().S3_POLICIES_FILE.read_text())
    photos = f"arn:aws:s3:::{BUCKETS.watchlist_bucket}/"
    def touching(*actions: str) -> set[str]:
        return {name for name, policy in policies.items() for st in policy["Statement"]
                if set(actions) & set(st["Action"]) and any(r.startswith(photos) for r in st["Resource"])}

    milvus_writers = {p for p, access in milvus_roles().ACCESS.items() if access == "writer"}
    assert touching("s3:PutObject") == milvus_writers == {"vigil-enrol", PRINCIPAL}
    # The housekeeper deletes expired entries: their photos in S3, their vectors in Milvus (its own role).
    housekeepers = {p for p, access in milvus_roles().ACCESS.items() if access == "housekeeper"}
    assert touching("s3:DeleteObject") == milvus_writers | housekeepers == {"vigil-enrol", PRINCIPAL, "vigil-housekeeper"}


def test_the_console_is_a_milvus_writer_with_no_more_than_enrolment_and_removal_need():
    roles = milvus_roles()
    assert roles.ACCESS[PRINCIPAL] == "writer"
    writer = {p for privileges in roles.ROLES["writer"][:2] for p in privileges}  # on the watchlist, on any collection
    reader = {p for privileges in roles.ROLES["reader"][:2] for p in privileges}
    assert writer - reader == MILVUS_WRITES
    assert not MILVUS_WRITES & reader


# --------------------------------------------------------------------------------------------
# Strict validation reaches the console's objects


def _misspelt(doc: dict, path: tuple[str, ...]):
    """Copies of ``doc`` with each key of the object at ``path`` misspelt in turn."""
    target = doc
    for key in path:
        target = target[key]
    for key in list(target):
        bad = copy.deepcopy(doc)
        inner = bad
        for step in path:
            inner = inner[step]
        inner[key[:-1]] = inner.pop(key)
        yield ".".join((*map(str, path), key)), bad


def test_a_misspelt_field_of_the_console_is_caught():
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    docs = render("overlays/production")
    objects = [d for d in docs if d["metadata"]["name"] in (NAME, STATE_CLAIM)]
    assert {d["kind"] for d in objects} == {"Deployment", "PersistentVolumeClaim", "Service", "Ingress", "NetworkPolicy", "KafkaUser"}
    pod = ("spec", "template", "spec")
    for doc in objects:
        if doc["kind"] == "KafkaUser":  # a custom resource: test_custom_resources.py's strict restatement of Strimzi's schema
            assert custom_resource_errors(doc) == []
            for where, bad in [*_misspelt(doc, ("spec",)), *_misspelt(doc, ("spec", "authorization", "acls", 0))]:
                assert custom_resource_errors(bad), f"KafkaUser/{NAME}: a misspelt {where} went unnoticed"
            continue
        kubernetes_validate.validate(doc, "1.33", strict=True)
        paths = [("spec",)] + ([pod, (*pod, "containers", 0), (*pod, "securityContext")] if doc["kind"] == "Deployment" else [])
        for path in paths:
            for where, bad in _misspelt(doc, path):
                with pytest.raises(kubernetes_validate.ValidationError):
                    kubernetes_validate.validate(bad, "1.33", strict=True)
                    pytest.fail(f"{doc['kind']}/{doc['metadata']['name']}: a misspelt {where} went unnoticed")


def test_a_misspelt_console_setting_is_caught(monkeypatch, tmp_path):
    docs = render("base")
    deployment = copy.deepcopy(console(docs))
    env = main_container(deployment)["env"]
    (cookies,) = [v for v in env if v["name"] == "VIGIL_CONSOLE__SECURE_COOKIES"]
    cookies["name"] = "VIGIL_CONSOLE__SECURE_COOKIE"
    with pytest.raises(Exception, match="secure_cookie"):
        console_settings(docs, deployment, monkeypatch, tmp_path)
