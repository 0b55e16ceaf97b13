"""Offline checks of the Kubernetes manifests in k8s/ (no cluster needed).

* each kustomization (base and both overlays) renders with ``kubectl kustomize``;
* every rendered built-in resource passes ``kubernetes-validate --strict`` for Kubernetes 1.33;
  custom resources (KEDA, Prometheus Operator, Strimzi) must be of a known kind and are checked
  by the invariants below instead;
* yamllint passes on k8s/;
* invariants: stage Deployments (probes on 8000, requests/limits, non-root, read-only root with an
  emptyDir /tmp, grace period, spreading), settings keys and values against runtime/settings.py,
  references to ConfigMaps/Secrets/ServiceAccounts, Services and PDBs per stage, KEDA ScaledObjects
  against the topic registry (schemas/topics.py), network policy scope, GPU placement, and the
  generated Strimzi KafkaTopic file against the registry.

Rendering and reading the objects: ``tests/k8s/manifests.py``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
import yaml

from schemas import stages, topics
from tests.k8s.manifests import (
    K8S,
    KUSTOMIZATIONS,
    by_name,
    config_env,
    generator,
    main_container,
    ns,
    of_kind,
    pod_spec,
    render,
    selects_pod,
    stage_deployments,
    stage_of,
    workloads,
)

K8S_VERSION = "1.33"
HEALTH_PORT = 8000
STAGES = tuple(s.name for s in stages.ALL_STAGES)
# Consumer group and input topic of each stage KEDA scales on its lag, from the stage topology.
SCALED: dict[str, tuple[str, topics.TopicSpec]] = {s.name: (s.consumer_group, s.source) for s in stages.STREAM_STAGES
                                                   if s.lag_per_replica is not None}

# Custom resources the manifests may use; kubernetes-validate has no schema for them.
KNOWN_CRDS = {
    ("keda.sh/v1alpha1", "ScaledObject"),
    ("keda.sh/v1alpha1", "TriggerAuthentication"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
    ("kafka.strimzi.io/v1", "KafkaTopic"),
    ("kafka.strimzi.io/v1", "KafkaUser"),
}
# Secrets an overlay references but deliberately does not render (created out of band: docs/deploy.md), and the
# operator tasks' requests (a ConfigMap, and the photos to enrol), created just before each task runs.
EXTERNAL_SECRETS = {
    "base": {"vigil-enrol-photos"},
    "overlays/local": {"vigil-enrol-photos"},
    "overlays/production": {p.secret for p in generator().principals()} | {"vigil-kafka-ca", "vigil-enrol-photos"},
}
REQUESTS = {f"vigil-{job.name}-request" for job in generator().JOBS}
# Non-Vigil environment variables the manifests may set in the shared ConfigMap.
EXTRA_ENV = {"SSL_CERT_FILE"}
SASL_TO_KEDA = {"SCRAM-SHA-512": "scram_sha512", "SCRAM-SHA-256": "scram_sha256", "PLAIN": "plaintext"}
# Destination ports a stage may open: DNS, Kafka, S3, Milvus (and RTSP for ingest only).
DNS_PORTS = {53}
SERVICE_PORTS = {9092, 9093, 8333, 9000, 443, 19530}
RTSP_PORTS = {554, 8554}


# --------------------------------------------------------------------------------------------
# Rendering


@pytest.fixture(params=KUSTOMIZATIONS)
def overlay(request) -> str:
    return request.param


@pytest.fixture
def docs(overlay) -> list[dict]:
    return render(overlay)


# --------------------------------------------------------------------------------------------
# Schemas and lint


def test_renders(docs):
    assert docs, "empty render"
    for d in docs:
        assert d.get("apiVersion") and d.get("kind") and d.get("metadata", {}).get("name"), d


def test_builtin_resources_pass_strict_schema_validation(docs):
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    errors, validated = [], 0
    for d in docs:
        where = f"{d['kind']}/{d['metadata']['name']}"
        try:
            kubernetes_validate.validate(d, K8S_VERSION, strict=True)
            validated += 1
        except kubernetes_validate.SchemaNotFoundError:
            if (d["apiVersion"], d["kind"]) not in KNOWN_CRDS:
                errors.append(f"{where}: no schema for {d['apiVersion']} {d['kind']} (typo, or a new CRD to list)")
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            errors.append(f"{where}: {path}: {exc.message}")
    assert not errors, "\n".join(errors)
    assert validated >= 10


def test_yamllint_k8s_dir():
    pytest.importorskip("yamllint")
    proc = subprocess.run([sys.executable, "-m", "yamllint", "-f", "parsable", "-c", str(K8S / ".yamllint.yaml"), str(K8S)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --------------------------------------------------------------------------------------------
# Stage Deployments


def test_every_stage_is_deployed(docs):
    stages = sorted({stage_of(d) for d in stage_deployments(docs)})
    assert stages == sorted(STAGES)


def _port_number(container: dict, port) -> int:
    if isinstance(port, int):
        return port
    named = {p["name"]: p["containerPort"] for p in container.get("ports", []) if "name" in p}
    assert port in named, f"named port {port!r} not declared"
    return named[port]


def test_stage_probes_on_health_port(docs):
    for d in stage_deployments(docs):
        c, name = main_container(d), d["metadata"]["name"]
        assert HEALTH_PORT in [p["containerPort"] for p in c.get("ports", [])], f"{name}: port {HEALTH_PORT} not declared"
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            assert probe in c, f"{name}: no {probe}"
            get = c[probe].get("httpGet")
            assert get, f"{name}: {probe} is not an HTTP probe"
            assert get["path"] == path, f"{name}: {probe} path {get['path']}"
            assert _port_number(c, get["port"]) == HEALTH_PORT, f"{name}: {probe} port {get['port']}"
        if "startupProbe" in c:
            assert _port_number(c, c["startupProbe"]["httpGet"]["port"]) == HEALTH_PORT


def test_health_port_setting_matches_probes(docs):
    for d in stage_deployments(docs):
        port = config_env(docs, d).get("VIGIL_STAGE__HEALTH_PORT")
        assert port in (None, str(HEALTH_PORT)), f"{d['metadata']['name']}: VIGIL_STAGE__HEALTH_PORT={port}"


def test_every_container_has_requests_and_limits(docs):
    for d in workloads(docs):
        spec = pod_spec(d)
        for c in [*spec.get("initContainers", []), *spec["containers"]]:
            res, where = c.get("resources", {}), f"{d['metadata']['name']}/{c['name']}"
            for kind in ("requests", "limits"):
                for resource in ("cpu", "memory"):
                    assert resource in res.get(kind, {}), f"{where}: no {kind}.{resource}"


def test_every_pod_runs_non_root_with_read_only_root(docs):
    for d in workloads(docs):
        spec, name = pod_spec(d), d["metadata"]["name"]
        pod_sc = spec.get("securityContext", {})
        assert spec.get("automountServiceAccountToken") is False, f"{name}: service account token mounted"
        for c in [*spec.get("initContainers", []), *spec["containers"]]:
            sc, where = c.get("securityContext", {}), f"{name}/{c['name']}"
            assert sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True, f"{where}: runAsNonRoot not set"
            assert sc.get("runAsUser", pod_sc.get("runAsUser", 1)) != 0, f"{where}: runs as uid 0"
            assert sc.get("readOnlyRootFilesystem") is True, f"{where}: root filesystem is writable"
            assert sc.get("allowPrivilegeEscalation") is False, f"{where}: privilege escalation allowed"
            assert "ALL" in sc.get("capabilities", {}).get("drop", []), f"{where}: capabilities not dropped"
            mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
            assert "/tmp" in mounts, f"{where}: no writable /tmp"
            volume = next(v for v in spec["volumes"] if v["name"] == mounts["/tmp"])
            assert "emptyDir" in volume, f"{where}: /tmp is not an emptyDir"
        assert pod_sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", f"{name}: no RuntimeDefault seccomp"


def test_stage_pods_shut_down_gracefully_and_spread(docs):
    for d in stage_deployments(docs):
        spec, name = pod_spec(d), d["metadata"]["name"]
        assert spec.get("terminationGracePeriodSeconds", 30) >= 30, f"{name}: grace period under 30 s"
        anti = spec.get("affinity", {}).get("podAntiAffinity")
        assert spec.get("topologySpreadConstraints") or anti, f"{name}: no spreading rule"


def test_references_resolve(docs, overlay):
    cms, secrets = by_name(docs, "ConfigMap"), by_name(docs, "Secret")
    accounts = by_name(docs, "ServiceAccount")
    external = EXTERNAL_SECRETS[overlay]

    def secret_ok(namespace, name):
        return (namespace, name) in secrets or name in external

    for d in workloads(docs):
        spec, name, n = pod_spec(d), d["metadata"]["name"], ns(d)
        assert n, f"{name}: no namespace"
        assert (n, spec.get("serviceAccountName", "default")) in accounts, f"{name}: service account missing"
        for c in [*spec.get("initContainers", []), *spec["containers"]]:
            for src in c.get("envFrom", []):
                if "configMapRef" in src:
                    assert (n, src["configMapRef"]["name"]) in cms, f"{name}: ConfigMap {src['configMapRef']['name']}"
                if "secretRef" in src:
                    assert secret_ok(n, src["secretRef"]["name"]), f"{name}: Secret {src['secretRef']['name']}"
            for var in c.get("env", []):
                ref = var.get("valueFrom", {})
                if "configMapKeyRef" in ref:
                    if ref["configMapKeyRef"]["name"] in REQUESTS:
                        continue
                    cm = cms.get((n, ref["configMapKeyRef"]["name"]))
                    assert cm and ref["configMapKeyRef"]["key"] in cm.get("data", {}), f"{name}: {var['name']}"
                if "secretKeyRef" in ref:
                    sec_name = ref["secretKeyRef"]["name"]
                    assert secret_ok(n, sec_name), f"{name}: Secret {sec_name}"
                    if (n, sec_name) in secrets:
                        assert ref["secretKeyRef"]["key"] in secrets[(n, sec_name)].get("stringData", {})
        for vol in spec.get("volumes", []):
            if "secret" in vol:
                assert secret_ok(n, vol["secret"]["secretName"]), f"{name}: Secret {vol['secret']['secretName']}"
            if "configMap" in vol:
                assert (n, vol["configMap"]["name"]) in cms, f"{name}: ConfigMap {vol['configMap']['name']}"
    for auth in of_kind(docs, "TriggerAuthentication"):
        for ref in auth["spec"].get("secretTargetRef", []):
            assert secret_ok(ns(auth), ref["name"]), f"TriggerAuthentication {auth['metadata']['name']}: {ref['name']}"


def test_each_stage_has_a_service_and_a_pdb(docs):
    services, pdbs = of_kind(docs, "Service"), of_kind(docs, "PodDisruptionBudget")
    for d in stage_deployments(docs):
        labels, name = d["spec"]["template"]["metadata"]["labels"], d["metadata"]["name"]

        def selects(selector: dict) -> bool:
            return bool(selector) and all(labels.get(k) == v for k, v in selector.items())

        svc = [s for s in services if ns(s) == ns(d) and selects(s["spec"].get("selector", {}))]
        assert svc, f"{name}: no Service"
        assert any(p["port"] == HEALTH_PORT for s in svc for p in s["spec"]["ports"]), f"{name}: Service lacks {HEALTH_PORT}"
        pdb = [p for p in pdbs if ns(p) == ns(d) and selects(p["spec"]["selector"].get("matchLabels", {}))]
        assert len(pdb) == 1, f"{name}: {len(pdb)} PodDisruptionBudgets"
        replicas = d["spec"].get("replicas", 1)
        if "minAvailable" in pdb[0]["spec"]:
            assert pdb[0]["spec"]["minAvailable"] < replicas, f"{name}: PDB blocks every eviction"


# --------------------------------------------------------------------------------------------
# Settings


def _settings_field(key: str):
    from runtime.settings import VigilSettings

    m = re.fullmatch(r"VIGIL_([A-Z0-9]+)__([A-Z0-9_]+)", key)
    if not m:
        return None
    section, field = m.group(1).lower(), m.group(2).lower()
    if section not in VigilSettings.model_fields:
        return None
    model = VigilSettings.model_fields[section].annotation
    return model.model_fields.get(field)


def test_every_vigil_key_is_a_real_setting(docs):
    keys: set[str] = set()
    for cm in of_kind(docs, "ConfigMap"):
        keys |= set(cm.get("data", {}))
    for s in of_kind(docs, "Secret"):
        keys |= set(s.get("stringData", {})) | set(s.get("data", {}))
    for d in of_kind(docs, "Deployment"):
        for c in pod_spec(d)["containers"]:
            keys |= {v["name"] for v in c.get("env", [])}
    for auth in of_kind(docs, "TriggerAuthentication"):
        keys |= {r["key"] for r in auth["spec"].get("secretTargetRef", []) if r["key"].startswith("VIGIL_")}
    vigil_keys = {k for k in keys if k.startswith("VIGIL_")}
    unknown = sorted(k for k in vigil_keys if _settings_field(k) is None)
    assert not unknown, f"not settings in runtime/settings.py: {unknown}"
    # ConfigMaps carry settings, camera lists or the few allowed extras only.
    for cm in of_kind(docs, "ConfigMap"):
        stray = {k for k in cm.get("data", {}) if not k.startswith("VIGIL_") and k not in EXTRA_ENV and not k.endswith(".json")}
        assert not stray, f"ConfigMap {cm['metadata']['name']}: unexpected keys {stray}"


def test_stage_environment_loads_into_settings(docs, monkeypatch, tmp_path):
    from runtime.settings import VigilSettings

    for d in stage_deployments(docs):
        for key in list(os.environ):
            if key.startswith("VIGIL_"):
                monkeypatch.delenv(key)
        monkeypatch.setenv("VIGIL_HOME", str(tmp_path))  # no stack.yaml there
        env = config_env(docs, d)
        if env.get("VIGIL_KAFKA__SECURITY_PROTOCOL", "").startswith("SASL"):
            # The login comes from vigil-credentials, created out of band in production (k8s/README.md).
            env.setdefault("VIGIL_KAFKA__SASL_USERNAME", "vigil")
            env.setdefault("VIGIL_KAFKA__SASL_PASSWORD", "from-the-secret")
        for key, value in env.items():
            if key.startswith("VIGIL_"):
                monkeypatch.setenv(key, value)
        settings = VigilSettings()
        stage = stage_of(d)
        assert settings.stage.health_port == HEALTH_PORT
        if stage == "ingest":
            assert settings.ingest.cameras, f"{d['metadata']['name']}: no cameras"
            ids = [c.id for c in settings.ingest.cameras]
            assert len(ids) == len(set(ids)), f"{d['metadata']['name']}: duplicate camera ids"
        if settings.kafka.security_protocol.startswith("SASL"):
            assert settings.kafka.sasl_mechanism, "SASL without a mechanism"


def test_camera_ids_are_unique_across_groups(docs):
    seen: dict[str, str] = {}
    for d in stage_deployments(docs):
        if stage_of(d) != "ingest":
            continue
        cameras = json.loads(config_env(docs, d)["VIGIL_INGEST__CAMERAS"])
        for cam in cameras:
            assert cam["id"] not in seen, f"camera {cam['id']} in {seen.get(cam['id'])} and {d['metadata']['name']}"
            seen[cam["id"]] = d["metadata"]["name"]


# --------------------------------------------------------------------------------------------
# KEDA


def test_scaled_objects_match_the_registry(docs, overlay):
    scaled = of_kind(docs, "ScaledObject")
    deployments = by_name(docs, "Deployment")
    auths = by_name(docs, "TriggerAuthentication")
    if overlay == "overlays/local":
        assert not scaled, "the local overlay runs without KEDA"
        return
    targeted = set()
    for so in scaled:
        name, spec = so["metadata"]["name"], so["spec"]
        ref = spec["scaleTargetRef"]
        assert ref.get("kind", "Deployment") == "Deployment" and ref.get("apiVersion", "apps/v1") == "apps/v1", name
        target = deployments.get((ns(so), ref["name"]))
        assert target is not None, f"ScaledObject {name}: no Deployment {ref['name']} in {ns(so)}"
        assert "replicas" not in target["spec"], f"{ref['name']}: spec.replicas fights KEDA's HPA"
        stage = stage_of(target)
        assert stage in SCALED, f"ScaledObject {name} scales {stage}, which has no lag target"
        targeted.add(stage)
        group, topic = SCALED[stage]
        assert len(spec["triggers"]) >= 1
        env = config_env(docs, target)
        for trig in spec["triggers"]:
            assert trig["type"] == "kafka", f"{name}: trigger {trig['type']}"
            meta = trig["metadata"]
            bad = {k: v for k, v in meta.items() if not isinstance(v, str)}
            assert not bad, f"{name}: trigger metadata values must be strings: {bad}"
            assert meta["consumerGroup"] == group, f"{name}: group {meta['consumerGroup']} != {group}"
            assert meta["topic"] == topic.name, f"{name}: topic {meta['topic']} != {topic.name}"
            assert meta["topic"] in topics.BY_NAME
            assert int(meta["lagThreshold"]) > 0
            assert meta["limitToPartitionsWithLag"] == "true", f"{name}: could scale past the partitions that have lag"
            assert meta["allowIdleConsumers"] == "false", f"{name}: limitToPartitionsWithLag needs allowIdleConsumers off"
            assert meta["bootstrapServers"] == env["VIGIL_KAFKA__BOOTSTRAP"], f"{name}: bootstrap differs from the stages'"
            protocol = env.get("VIGIL_KAFKA__SECURITY_PROTOCOL", "PLAINTEXT")
            if protocol.startswith("SASL"):
                assert meta.get("sasl") == SASL_TO_KEDA[env["VIGIL_KAFKA__SASL_MECHANISM"]], f"{name}: sasl"
                auth = trig.get("authenticationRef", {}).get("name")
                assert (ns(so), auth) in auths, f"{name}: TriggerAuthentication {auth} missing"
                params = {r["parameter"] for r in auths[(ns(so), auth)]["spec"]["secretTargetRef"]}
                assert {"username", "password"} <= params
            else:
                assert meta.get("sasl", "none") == "none"
            assert (meta.get("tls") == "enable") == protocol.endswith("SSL"), f"{name}: tls vs {protocol}"
        lo, hi = spec.get("minReplicaCount", 0), spec.get("maxReplicaCount", 100)
        assert isinstance(lo, int) and isinstance(hi, int)
        assert 0 <= lo <= hi <= topic.partitions, f"{name}: replicas {lo}..{hi} vs {topic.partitions} partitions"
    assert targeted == set(SCALED), f"stages with a lag target but no ScaledObject: {set(SCALED) - targeted}"


def test_operator_tasks_are_templates_with_their_own_principal(docs):
    jobs = {d["metadata"]["name"]: d for d in of_kind(docs, "CronJob")}
    assert set(jobs) == {"vigil-enrol", "vigil-remove", "vigil-deployment", "vigil-replay", "vigil-audit-verify", "vigil-housekeep"}
    principals = {p.name: p for p in generator().principals()}
    for name, job in jobs.items():
        if name == "vigil-housekeep":  # the retention sweep runs on its schedule, one at a time, with no request
            assert job["spec"]["suspend"] is False and job["spec"]["concurrencyPolicy"] == "Forbid"
            assert job["spec"]["schedule"] == generator().sweep_schedule() == "* * * * *"
            assert main_container(job)["args"] == ["housekeep"] and not main_container(job).get("env")
        else:
            assert job["spec"]["suspend"] is True, f"{name}: a template must never run on its schedule"
        spec = job["spec"]["jobTemplate"]["spec"]
        assert spec["backoffLimit"] == 0 and spec["template"]["spec"]["restartPolicy"] == "Never", f"{name}: an audited task ran twice"
        refs = [s["secretRef"]["name"] for s in main_container(job)["envFrom"] if "secretRef" in s]
        assert len(refs) == 1 and refs[0].removesuffix("-credentials") in principals, f"{name}: {refs}"
        assert refs[0] not in {f"vigil-{s}-credentials" for s in STAGES}, f"{name} runs with a stage's credentials"


def test_ingest_is_not_autoscaled(docs):
    ingest = {d["metadata"]["name"] for d in stage_deployments(docs) if stage_of(d) == "ingest"}
    for so in of_kind(docs, "ScaledObject"):
        assert so["spec"]["scaleTargetRef"]["name"] not in ingest
    for d in stage_deployments(docs):
        if stage_of(d) == "ingest":
            assert d["spec"].get("replicas", 1) == 1, "one reader per camera group"
            assert d["spec"].get("strategy", {}).get("type") == "Recreate", "no overlap of two readers"


def test_local_overlay_is_single_replica_without_crds():
    docs = render("overlays/local")
    assert not [d for d in docs if (d["apiVersion"], d["kind"]) in KNOWN_CRDS]
    for d in of_kind(docs, "Deployment"):
        assert d["spec"].get("replicas") == 1, f"{d['metadata']['name']}: replicas {d['spec'].get('replicas')}"


# --------------------------------------------------------------------------------------------
# Network policy


def test_network_policy_limits_stages(docs):
    policies = of_kind(docs, "NetworkPolicy")
    assert any(p["spec"]["podSelector"] == {} and set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"}
               and not p["spec"].get("ingress") and not p["spec"].get("egress") for p in policies), "no default deny"
    for d in stage_deployments(docs):
        labels, name = d["spec"]["template"]["metadata"]["labels"], d["metadata"]["name"]
        allowed = DNS_PORTS | SERVICE_PORTS | (RTSP_PORTS if stage_of(d) == "ingest" else set())
        egress_ports: set[int] = set()
        for p in policies:
            if not selects_pod(p, labels):
                continue
            for rule in p["spec"].get("egress", []):
                assert rule.get("to"), f"{p['metadata']['name']}: egress rule without `to` opens everything"
                assert rule.get("ports"), f"{p['metadata']['name']}: egress rule without ports"
                ports = {port["port"] for port in rule["ports"]}
                assert ports <= allowed, f"{name}: egress to ports {ports - allowed}"
                for peer in rule["to"]:
                    if "ipBlock" in peer:
                        assert ports <= RTSP_PORTS, f"{p['metadata']['name']}: ipBlock egress beyond cameras"
                egress_ports |= ports
            for rule in p["spec"].get("ingress", []):
                assert {port["port"] for port in rule.get("ports", [{"port": None}])} <= {HEALTH_PORT}, \
                    f"{p['metadata']['name']}: ingress beyond the metrics port"
        assert DNS_PORTS <= egress_ports, f"{name}: DNS not allowed"
        env = config_env(docs, d)
        for endpoint in (env["VIGIL_KAFKA__BOOTSTRAP"], env["VIGIL_S3__ENDPOINT"], env["VIGIL_MILVUS__URI"]):
            port = int(endpoint.rsplit(":", 1)[1].split("/")[0])
            # A Service port may differ from its pods' port (MinIO 443 -> 9000); both are listed as allowed.
            assert port in SERVICE_PORTS, f"{name}: {endpoint} uses a port the policy does not know"


# --------------------------------------------------------------------------------------------
# Production specifics


def test_production_gpu_stages():
    docs = render("overlays/production")
    for d in stage_deployments(docs):
        spec, c = pod_spec(d), main_container(d)
        gpu = c["resources"]["limits"].get("nvidia.com/gpu")
        if stage_of(d) in ("detect", "embed"):
            assert str(gpu) == "1", f"{d['metadata']['name']}: nvidia.com/gpu limit {gpu}"
            assert spec.get("nodeSelector") or spec.get("affinity", {}).get("nodeAffinity"), "no GPU node selection"
            assert any(t.get("key") == "nvidia.com/gpu" for t in spec.get("tolerations", [])), "no GPU toleration"
            assert config_env(docs, d).get("VIGIL_MODELS__DEVICE") in ("cuda", "auto")
        else:
            assert gpu is None
    for name in ("base", "overlays/local"):
        for d in stage_deployments(render(name)):
            assert "nvidia.com/gpu" not in main_container(d)["resources"].get("limits", {}), f"{name}: GPU in CPU overlay"


def test_production_uses_tls_and_scram():
    docs = render("overlays/production")
    for d in stage_deployments(docs):
        env = config_env(docs, d)
        assert env["VIGIL_KAFKA__SECURITY_PROTOCOL"] == "SASL_SSL"
        assert env["VIGIL_KAFKA__SASL_MECHANISM"].startswith("SCRAM-")
        assert env["VIGIL_S3__SECURE"] == "true"
    assert not of_kind(docs, "Secret"), "production must not render placeholder Secrets"


# --------------------------------------------------------------------------------------------
# Generated from the registries: Strimzi KafkaTopics and KafkaUsers, KEDA ScaledObjects, Secrets, rules, dashboard


def test_generated_files_are_up_to_date():
    for path, text in generator().rendered().items():
        assert path.exists() and path.read_text() == text, f"{path} is stale: run python k8s/generate.py and commit the result"


def test_generator_check_mode_catches_a_stale_file(tmp_path, monkeypatch):
    gen = generator()
    monkeypatch.setattr(gen, "ROOT", tmp_path)
    for name in [n for n in vars(gen) if n.endswith("_FILE")]:
        monkeypatch.setattr(gen, name, tmp_path / f"{name.lower()}.out")
    assert gen.main([]) == 0 and gen.main(["--check"]) == 0
    gen.KEDA_FILE.write_text(gen.render_keda().replace("vigil-detect", "vigil-detector"))
    assert gen.main(["--check"]) == 1


def test_scaled_objects_follow_the_stage_topology():
    resources = [d for d in yaml.safe_load_all((K8S / "base" / "keda.yaml").read_text()) if d]
    scaled = {r["spec"]["scaleTargetRef"]["name"]: r for r in resources}
    assert set(scaled) == {f"vigil-{name}" for name in SCALED}
    for name, (group, topic) in SCALED.items():
        (trigger,) = scaled[f"vigil-{name}"]["spec"]["triggers"]
        assert trigger["metadata"]["consumerGroup"] == group
        assert trigger["metadata"]["topic"] == topic.name
        assert trigger["metadata"]["lagThreshold"] == str(stages.BY_NAME[name].lag_per_replica)


def test_generated_kafkatopics_match_the_registry():
    gen = generator()
    resources = [d for d in yaml.safe_load_all(gen.TOPICS_FILE.read_text()) if d]
    assert [r["spec"]["topicName"] for r in resources] == [t.name for t in topics.ALL_TOPICS]
    for r, t in zip(resources, topics.ALL_TOPICS):
        assert r["kind"] == "KafkaTopic"
        assert r["spec"]["partitions"] == t.partitions
        assert r["spec"]["config"]["retention.ms"] == str(t.retention_ms)
        assert r["spec"]["config"]["cleanup.policy"] == t.cleanup_policy
        assert int(r["spec"]["config"]["min.insync.replicas"]) < r["spec"]["replicas"], "one broker down stops writes"
        assert r["metadata"]["labels"]["strimzi.io/cluster"] == gen.CLUSTER


def test_production_renders_the_topics_and_users_for_one_cluster():
    docs = render("overlays/production")
    kts, users = of_kind(docs, "KafkaTopic"), of_kind(docs, "KafkaUser")
    assert sorted(k["spec"]["topicName"] for k in kts) == sorted(t.name for t in topics.ALL_TOPICS)
    assert users, "no KafkaUser"
    clusters = {d["metadata"]["labels"]["strimzi.io/cluster"] for d in [*kts, *users]}
    assert len(clusters) == 1
    assert len({ns(d) for d in [*kts, *users]}) == 1, "Strimzi resources split over namespaces"
    (cluster,) = clusters
    replicas = {k["spec"]["replicas"] for k in kts}
    for d in stage_deployments(docs):
        env = config_env(docs, d)
        assert {int(env["VIGIL_KAFKA__REPLICATION_FACTOR"])} == replicas, "stages would create topics differently"
        assert env["VIGIL_KAFKA__BOOTSTRAP"].startswith(f"{cluster}-kafka-bootstrap."), "bootstrap of another cluster"


def test_cameras_are_declared_once_and_each_group_is_deployed(tmp_path, monkeypatch):
    gen = generator()
    groups = yaml.safe_load(gen.CAMERAS.read_text())["groups"]
    docs = render("base")
    ingest = {d["metadata"]["labels"]["vigil.io/camera-group"]: d for d in stage_deployments(docs) if stage_of(d) == "ingest"}
    assert set(ingest) == set(groups)
    for group, cameras in groups.items():
        assert json.loads(config_env(docs, ingest[group])["VIGIL_INGEST__CAMERAS"]) == cameras
    twice = tmp_path / "cameras.yaml"  # one camera in two groups would be read twice
    twice.write_text(yaml.safe_dump({"groups": {**groups, "spare": [groups["default"][-1]]}}))
    monkeypatch.setattr(gen, "CAMERAS", twice)
    monkeypatch.setattr(gen, "ROOT", tmp_path)
    with pytest.raises(SystemExit, match=groups["default"][-1]["id"]):
        gen.render_ingest()


@pytest.mark.parametrize("component", ["gpu-time-slicing", "gpu-mig"])
def test_gpu_sharing_components_compose_with_production(component, tmp_path):
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    base = os.path.relpath(K8S, tmp_path)
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({
        "resources": [f"{base}/overlays/production"], "components": [f"{base}/components/{component}"]}))
    proc = subprocess.run(["kubectl", "kustomize", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    for d in docs:
        if (d["apiVersion"], d["kind"]) not in KNOWN_CRDS:
            kubernetes_validate.validate(d, K8S_VERSION, strict=True)
    for d in stage_deployments(docs):
        limits = main_container(d)["resources"]["limits"]
        gpus = {k: v for k, v in limits.items() if k.startswith("nvidia.com/")}
        if stage_of(d) in ("detect", "embed"):
            expected = {"nvidia.com/gpu": "1"} if component == "gpu-time-slicing" else {"nvidia.com/mig-1g.10gb": "1"}
            assert gpus == expected, f"{d['metadata']['name']}: {gpus}"
        else:
            assert not gpus
    if component == "gpu-time-slicing":
        (config,) = [d for d in of_kind(docs, "ConfigMap") if d["metadata"]["name"] == "vigil-time-slicing"]
        sharing = yaml.safe_load(config["data"]["any"])["sharing"]["timeSlicing"]["resources"]
        assert sharing == [{"name": "nvidia.com/gpu", "replicas": 4}]
