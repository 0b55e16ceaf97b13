"""Custom resources (KEDA, Prometheus Operator, Strimzi) validated strictly offline, unknown and misspelt fields included.

kubernetes-validate has no schema for custom resources. KEDA and Prometheus Operator resources are checked against
cloudcoil's pydantic models of their CRDs (pinned in requirements-dev.lock): whatever a model drops on parsing is a
field the CRD does not have. No package ships Strimzi's CRDs or models, so ``STRIMZI`` below restates the
``kafka.strimzi.io/v1`` schemas of KafkaTopic and KafkaUser (Strimzi 0.49+), strictly: unknown keys, wrong types and
values outside the CRD's enums are errors. Each validator is shown to catch a misspelt field of every kind rendered.
"""

from __future__ import annotations

import copy
from typing import Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tests.k8s.manifests import KUSTOMIZATIONS, render


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class AclResource(_Strict):
    type: Literal["topic", "group", "cluster", "transactionalId"]
    name: str | None = None
    patternType: Literal["literal", "prefix"] | None = None


class AclRule(_Strict):
    type: Literal["allow", "deny"] | None = None
    resource: AclResource
    host: str | None = None
    operations: list[Literal["Read", "Write", "Create", "Delete", "Alter", "Describe", "ClusterAction", "AlterConfigs",
                             "DescribeConfigs", "IdempotentWrite", "All"]] = Field(min_length=1)


class Authorization(_Strict):
    type: Literal["simple"]
    acls: list[AclRule]


class Authentication(_Strict):
    type: Literal["tls", "tls-external", "scram-sha-512"]
    password: dict | None = None


class Quotas(_Strict):
    producerByteRate: int | None = Field(None, ge=0)
    consumerByteRate: int | None = Field(None, ge=0)
    requestPercentage: int | None = Field(None, ge=0)
    controllerMutationRate: float | None = Field(None, ge=0)


class KafkaUserSpec(_Strict):
    userName: str | None = None
    authentication: Authentication | None = None
    authorization: Authorization | None = None
    quotas: Quotas | None = None
    template: dict | None = None


class KafkaTopicSpec(_Strict):
    partitions: int | None = Field(None, ge=1)
    replicas: int | None = Field(None, ge=1, le=32767)
    config: dict | None = None  # x-kubernetes-preserve-unknown-fields: the broker's topic configs
    topicName: str | None = None


class _Resource(_Strict):
    apiVersion: Literal["kafka.strimzi.io/v1"]
    metadata: dict


class KafkaUser(_Resource):
    kind: Literal["KafkaUser"]
    spec: KafkaUserSpec


class KafkaTopic(_Resource):
    kind: Literal["KafkaTopic"]
    spec: KafkaTopicSpec


STRIMZI = {("kafka.strimzi.io/v1", "KafkaUser"): KafkaUser, ("kafka.strimzi.io/v1", "KafkaTopic"): KafkaTopic}


def cloudcoil_models() -> dict:
    import cloudcoil.models.keda.v1alpha1 as keda
    import cloudcoil.models.prometheus_operator.v1 as prom

    return {
        ("keda.sh/v1alpha1", "ScaledObject"): keda.ScaledObject,
        ("keda.sh/v1alpha1", "TriggerAuthentication"): keda.TriggerAuthentication,
        ("monitoring.coreos.com/v1", "ServiceMonitor"): prom.ServiceMonitor,
        ("monitoring.coreos.com/v1", "PrometheusRule"): prom.PrometheusRule,
    }


def _unknown_fields(given, parsed, path=""):
    """Keys of `given` that a (lenient) pydantic model dropped: misspelled or unknown fields."""
    if isinstance(given, dict):
        if not isinstance(parsed, dict):
            return [f"{path}: not an object"]
        return [p for k, v in given.items()
                for p in ([f"{path}.{k}"] if k not in parsed else _unknown_fields(v, parsed[k], f"{path}.{k}"))]
    if isinstance(given, list):
        return [p for i, (g, q) in enumerate(zip(given, parsed)) for p in _unknown_fields(g, q, f"{path}[{i}]")]
    return []


def errors(doc: dict) -> list[str] | None:
    """What is wrong with a custom resource; None when no validator knows its kind."""
    key = (doc["apiVersion"], doc["kind"])
    try:
        if key in STRIMZI:
            STRIMZI[key].model_validate(doc)
            return []
        model = cloudcoil_models().get(key)
        if model is None:
            return None
        parsed = model.model_validate(doc).model_dump(by_alias=True, exclude_unset=True, mode="json")
    except ValidationError as exc:
        return [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
    return [p for p in _unknown_fields(doc, parsed) if not p.startswith(".metadata")]


def custom_resources(kustomization: str) -> list[dict]:
    """Objects outside Kubernetes' own API groups (the core group, ``apps``, ``policy``, ``*.k8s.io``)."""
    def builtin(group: str) -> bool:
        return "." not in group or group.endswith(".k8s.io")

    return [d for d in render(kustomization) if "/" in d["apiVersion"] and not builtin(d["apiVersion"].split("/")[0])]


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_custom_resources_match_their_schemas(kustomization):
    problems = {}
    for doc in custom_resources(kustomization):
        found = errors(doc)
        assert found is not None, f"no schema for {doc['apiVersion']} {doc['kind']}: add its validator here"
        if found:
            problems[f"{doc['kind']}/{doc['metadata']['name']}"] = found
    assert not problems, problems


def misspellings(doc: dict):
    """``doc`` with one field misspelt, once per key of ``spec`` and once in the first object of each list under it."""
    for key in doc["spec"]:
        bad = copy.deepcopy(doc)
        bad["spec"][key[:-1]] = bad["spec"].pop(key)
        yield f"spec.{key}", bad
        value = doc["spec"][key]
        if isinstance(value, list) and value and isinstance(value[0], dict):
            inner = next(iter(value[0]))
            bad = copy.deepcopy(doc)
            bad["spec"][key][0][inner + "s"] = bad["spec"][key][0].pop(inner)
            yield f"spec.{key}[0].{inner}", bad


def test_a_misspelt_field_is_caught_in_every_kind():
    kinds = {}
    for doc in custom_resources("overlays/production"):
        kinds.setdefault(doc["kind"], doc)
    assert set(kinds) >= {"KafkaTopic", "KafkaUser", "ScaledObject", "TriggerAuthentication", "ServiceMonitor", "PrometheusRule"}
    for kind, doc in kinds.items():
        assert errors(doc) == [], kind
        for where, bad in misspellings(doc):
            assert errors(bad), f"{kind}: a misspelt {where} went unnoticed"
