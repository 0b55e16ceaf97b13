"""One translation of KafkaSettings, spelt for kafka-python and for faust (aiokafka): both reach the cluster alike.

The real client objects are built (they connect only when started or used) and asked what they would do.
"""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import aiokafka
import certifi
import pytest
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from faust.types.auth import to_credentials
from kafka import KafkaConsumer
from kafka.net.connection import KafkaConnection

from runtime.kafka import connection, faust_credentials, kafka_python_config
from runtime.settings import KafkaSettings, VigilSettings
from runtime.stream import build_app

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
LOGIN = {"sasl_mechanism": "SCRAM-SHA-512", "sasl_username": "vigil", "sasl_password": "s3cret"}


@pytest.fixture(autouse=True)
def _no_config(no_config):
    """Every test here starts from the defaults (tests/runtime/conftest.py)."""


def kafka_settings(protocol: str, **extra) -> KafkaSettings:
    login = LOGIN if protocol.startswith("SASL_") else {}
    return KafkaSettings(bootstrap="127.0.0.1:1,127.0.0.2:1", security_protocol=protocol, **login, **extra)


def kafka_python_view(config: dict) -> dict:
    """What a kafka-python client built from ``config`` will do when it connects."""
    consumer = KafkaConsumer(**config, api_version=(2, 8))  # a given api_version: no connection at construction
    try:
        manager = consumer._client._manager
        return {
            "tls": manager.ssl_enabled,
            "ssl_context": manager.config["ssl_context"] if manager.ssl_enabled else None,
            "sasl": KafkaConnection(None, **manager.config).sasl_enabled,
            "login": (manager.config["sasl_mechanism"], manager.config["sasl_plain_username"], manager.config["sasl_plain_password"]),
        }
    finally:
        consumer.close()


def aiokafka_view(auth: dict) -> dict:
    """What an aiokafka client built with faust's ``auth`` keywords will do when it connects."""
    async def build():
        consumer = aiokafka.AIOKafkaConsumer(bootstrap_servers="127.0.0.1:1", **auth)  # validates the combination
        client = consumer._client
        try:
            return {
                "tls": client._security_protocol in ("SSL", "SASL_SSL"),
                "ssl_context": client._ssl_context if client._security_protocol in ("SSL", "SASL_SSL") else None,
                "sasl": client._security_protocol.startswith("SASL_"),
                "login": (client._sasl_mechanism, client._sasl_plain_username, client._sasl_plain_password),
                "protocol": client._security_protocol,
            }
        finally:
            await consumer.stop()

    return asyncio.run(build())


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_both_libraries_agree(protocol):
    conn = connection(kafka_settings(protocol))
    kp = kafka_python_view(kafka_python_config(conn))
    aio = aiokafka_view(credentials_to_aiokafka_auth(to_credentials(faust_credentials(conn))))  # as faust's settings convert them

    tls, sasl = protocol in ("SSL", "SASL_SSL"), protocol.startswith("SASL_")
    assert (kp["tls"], kp["sasl"]) == (aio["tls"], aio["sasl"]) == (tls, sasl)
    assert aio["protocol"] == protocol
    assert kp["ssl_context"] is aio["ssl_context"] is conn.ssl_context  # the one context, built once
    if tls:
        assert conn.ssl_context.verify_mode == ssl.CERT_REQUIRED and conn.ssl_context.check_hostname
    if sasl:
        assert kp["login"] == aio["login"] == ("SCRAM-SHA-512", "vigil", "s3cret")
    else:
        assert kp["login"][0] is None  # aiokafka keeps its default mechanism, unused without SASL
        assert aio["login"][1:] == (None, None)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_stream_stages_connect_as_the_settings_say(protocol):
    app = build_app("vigil-test", VigilSettings(kafka=kafka_settings(protocol)))
    # faust's consumers and its producer take their auth from these:
    consumer_auth = credentials_to_aiokafka_auth(app.conf.broker_credentials, app.conf.ssl_context)
    producer_auth = app.producer._settings_auth()
    for auth in (consumer_auth, producer_auth):
        view = aiokafka_view(auth)
        assert view["protocol"] == protocol
        assert view["tls"] == (protocol in ("SSL", "SASL_SSL"))  # SSL alone used to reach faust as PLAINTEXT
        if protocol.startswith("SASL_"):
            assert view["login"] == ("SCRAM-SHA-512", "vigil", "s3cret")
    assert [f"{url.host}:{url.port}" for url in app.conf.broker] == ["127.0.0.1:1", "127.0.0.2:1"]


def test_the_same_bootstrap_servers_for_both():
    conn = connection(KafkaSettings(bootstrap="a:9092, b:9093"))
    assert kafka_python_config(conn)["bootstrap_servers"] == ["a:9092", "b:9093"]
    assert conn.bootstrap == ("a:9092", "b:9093")


def test_a_ca_file_is_what_tls_trusts(tmp_path):
    bundle = Path(certifi.where()).read_text()
    end = "-----END CERTIFICATE-----"
    ca = tmp_path / "ca.crt"
    ca.write_text(bundle[bundle.index("-----BEGIN CERTIFICATE-----"):bundle.index(end) + len(end)] + "\n")
    trusted = connection(kafka_settings("SASL_SSL", ssl_cafile=ca)).ssl_context.get_ca_certs()
    assert len(trusted) == 1  # that CA only, not the system's
    assert connection(kafka_settings("PLAINTEXT", ssl_cafile=ca)).ssl_context is None  # no TLS, no context


def test_the_password_stays_out_of_reprs():
    conn = connection(kafka_settings("SASL_SSL"))
    assert "s3cret" not in repr(conn) and "s3cret" not in repr(kafka_settings("SASL_SSL"))
    assert "s3cret" not in repr(faust_credentials(conn))
    assert kafka_python_config(conn)["sasl_plain_password"] == "s3cret"


@pytest.mark.parametrize("protocol", ("SASL_PLAINTEXT", "SASL_SSL"))
@pytest.mark.parametrize("missing", ("sasl_mechanism", "sasl_username", "sasl_password"))
def test_an_incomplete_sasl_login_is_a_settings_error(protocol, missing):
    login = {key: value for key, value in LOGIN.items() if key != missing}
    with pytest.raises(ValueError, match=f"security_protocol {protocol} needs {missing}"):
        KafkaSettings(security_protocol=protocol, **login)
    with pytest.raises(ValueError, match=f"(?s)kafka.*needs {missing}"):
        VigilSettings(kafka={"security_protocol": protocol, **login})


def test_sasl_fields_without_sasl_are_ignored():
    conn = connection(KafkaSettings(security_protocol="SSL", **LOGIN))
    assert not conn.sasl and "sasl_mechanism" not in kafka_python_config(conn)
    assert isinstance(faust_credentials(conn), ssl.SSLContext)
