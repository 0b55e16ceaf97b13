"""Least privilege: the rendered KafkaUsers, credentials and S3 policies against the stage topology.

Expectations come from ``schemas/stages.py`` (each stage's source and side inputs, outputs and whether it audits),
never from the generator's own ACL code: a stage reads its input and side inputs, writes its outputs, dead letters
and (if it audits) audit requests, and joins its group; nothing else, and only the audit stage writes the sealed log.
"""

from __future__ import annotations

import json

import pytest

from schemas.stages import ALL_STAGES, BY_NAME
from schemas.topics import AUDIT, AUDIT_REQUESTS, DEAD_LETTERS, DEPLOYMENTS
from tests.k8s.manifests import KUSTOMIZATIONS, by_name, generator, main_container, of_kind, render, stage_deployments, stage_of

GEN = generator()
# Kafka operations a Vigil principal may hold; Create, Alter, Delete, All, ClusterAction never (topics are KafkaTopics).
ALLOWED_OPERATIONS = {"Read", "Write", "Describe"}


def users() -> dict[str, dict]:
    return {u["metadata"]["name"]: u for u in of_kind(render("overlays/production"), "KafkaUser")}


def grants(user: dict) -> set[tuple[str, str, str]]:
    """(resource type, resource name, operation) for every allowed operation."""
    out = set()
    for acl in user["spec"]["authorization"]["acls"]:
        assert acl.get("type", "allow") == "allow"
        resource = acl["resource"]
        assert resource.get("patternType", "literal") == "literal", f"{user['metadata']['name']}: prefix ACL {resource}"
        out |= {(resource["type"], resource.get("name"), op) for op in acl["operations"]}
    return out


def topics(granted: set, operation: str) -> set[str]:
    return {name for kind, name, op in granted if kind == "topic" and op == operation}


@pytest.mark.parametrize("stage", sorted(BY_NAME))
def test_a_stage_reads_its_input_writes_its_outputs_and_nothing_else(stage):
    spec = BY_NAME[stage]
    granted = grants(users()[f"vigil-{stage}"])
    reads = ({spec.source.name} if spec.source else set()) | {t.name for t in spec.reads}
    writes = {t.name for t in spec.outputs} | ({AUDIT_REQUESTS.name} if spec.audits else set())
    if spec.source:
        writes.add(DEAD_LETTERS.name)  # a stream stage dead-letters what it cannot process
    assert topics(granted, "Read") == reads
    assert topics(granted, "Write") == writes
    assert {(kind, name) for kind, name, op in granted if kind == "group"} == ({("group", spec.consumer_group)} if spec.source else set())
    assert {op for _, _, op in granted} <= ALLOWED_OPERATIONS


def test_side_topics_follow_the_code():
    """Deployments: whoever decides on frames (ingest, detect, match); audit requests: ingest's footage retention and
    match's deletion of an ended track's transient evidence (accountability.retention.delete_audited)."""
    assert {s.name for s in ALL_STAGES if DEPLOYMENTS in s.reads} == {"ingest", "detect", "match"}
    assert {s.name for s in ALL_STAGES if s.audits} == {"ingest", "match"}
    assert all(AUDIT_REQUESTS in s.topics_written for s in ALL_STAGES if s.audits)


def test_the_housekeeper_only_audits():
    assert grants(users()["vigil-housekeeper"]) == {("topic", AUDIT_REQUESTS.name, "Write")}


def test_no_principal_creates_or_administers():
    for name, user in users().items():
        granted = grants(user)
        assert {op for _, _, op in granted} <= ALLOWED_OPERATIONS, f"{name}: {granted}"
        assert {kind for kind, _, _ in granted} <= {"topic", "group"}, f"{name}: cluster or transactional rights"


def test_only_the_auditors_write_the_audit_topic():
    auditors = {f"vigil-{s.name}" for s in ALL_STAGES if AUDIT in s.outputs}
    writers = {name for name, user in users().items() if AUDIT.name in topics(grants(user), "Write")}
    assert writers == auditors


def test_keda_reads_lag_only():
    granted = grants(users()["vigil-keda"])
    assert {op for _, _, op in granted} == {"Describe"}
    scaled = [s for s in ALL_STAGES if s.source and s.lag_per_replica is not None]
    assert granted == {("topic", s.source.name, "Describe") for s in scaled} | {("group", s.consumer_group, "Describe") for s in scaled}


def test_every_principal_has_a_user_and_a_credentials_template():
    principals = {p.name for p in GEN.principals()}
    assert set(users()) == principals
    assert {f"vigil-{s.name}" for s in ALL_STAGES} | {"vigil-console", "vigil-enrol", "vigil-keda", "vigil-housekeeper"} <= principals
    templates = {s["metadata"]["name"] for s in of_kind(render("base"), "Secret")}
    assert templates == {f"{name}-credentials" for name in principals}


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_every_stage_pod_logs_in_as_its_own_principal(kustomization):
    docs = render(kustomization)
    for deployment in stage_deployments(docs):
        refs = [src["secretRef"]["name"] for src in main_container(deployment).get("envFrom", []) if "secretRef" in src]
        assert refs == [f"vigil-{stage_of(deployment)}-credentials"], f"{deployment['metadata']['name']}: {refs}"
    for auth in by_name(docs, "TriggerAuthentication").values():
        names = {ref["name"] for ref in auth["spec"]["secretTargetRef"] if ref["parameter"] in ("username", "password")}
        assert names == {"vigil-keda-credentials"}


def test_s3_policies_separate_the_watchlist_writer_from_its_readers():
    policies = json.loads(GEN.S3_POLICIES_FILE.read_text())
    watchlist = f"arn:aws:s3:::{GEN.BUCKETS.watchlist_bucket}/"
    for name, policy in policies.items():
        for statement in policy["Statement"]:
            assert statement["Effect"] == "Allow"
            assert not any(a in ("s3:*", "s3:CreateBucket", "s3:DeleteBucket", "s3:PutBucketPolicy") for a in statement["Action"]), name
            writes = {a for a in statement["Action"] if a in ("s3:PutObject", "s3:DeleteObject")}
            if writes and any(r.startswith(watchlist) for r in statement["Resource"]):
                # Enrolment and the console (approving a proposal enrols, removing deletes): the Milvus writers too;
                # the housekeeper deletes expired entries' photos, and only deletes.
                assert name in ("vigil-enrol", "vigil-console", "vigil-housekeeper"), f"{name} may write the watchlist"
                assert name != "vigil-housekeeper" or writes == {"s3:DeleteObject"}, f"{name}: {writes}"
    assert "vigil-embed" not in policies, "embed needs no S3 at all"


def test_the_housekeeper_deletes_exactly_what_the_sweep_deletes():
    """Housekeeper.sweep and footage retention: deletes only (listing is every principal's), nothing read or written."""
    policy = json.loads(GEN.S3_POLICIES_FILE.read_text())["vigil-housekeeper"]
    listing, *rest = policy["Statement"]
    assert set(listing["Action"]) == {"s3:ListBucket", "s3:GetBucketLocation"}
    b = GEN.BUCKETS
    assert {r: tuple(st["Action"]) for st in rest for r in st["Resource"]} == {
        f"arn:aws:s3:::{b.evidence_bucket}/transient/*": ("s3:DeleteObject",),
        f"arn:aws:s3:::{b.evidence_bucket}/alerts/*": ("s3:DeleteObject",),
        f"arn:aws:s3:::{b.frames_bucket}/*": ("s3:DeleteObject",),
        f"arn:aws:s3:::{b.footage_bucket}/segments/*": ("s3:DeleteObject",),
        f"arn:aws:s3:::{b.watchlist_bucket}/*": ("s3:DeleteObject",),
    }


def test_match_deletes_the_transient_evidence_of_its_tracks():
    policy = json.loads(GEN.S3_POLICIES_FILE.read_text())["vigil-match"]
    transient = f"arn:aws:s3:::{GEN.BUCKETS.evidence_bucket}/transient/*"
    assert any("s3:DeleteObject" in st["Action"] and transient in st["Resource"] for st in policy["Statement"])
    assert not any("s3:DeleteObject" in st["Action"] and r != transient for st in policy["Statement"] for r in st["Resource"])
