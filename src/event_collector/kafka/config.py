"""librdkafka's configuration, built from the KAFKA_* settings: one place for connection, TLS and SASL, so
that the producer (ACK_MODE=kafka) and the consumer (`event-collector index`) connect the same way."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..exceptions import ConfigError
from ..settings import Settings


def connection_config(settings: Settings) -> dict[str, Any]:
    """Brokers, TLS and SASL: what every client of the cluster needs. Raises ConfigError for a setting that
    cannot work (a missing file, SASL without a user), so that start-up stops naming it."""
    servers = ",".join(part.strip() for part in settings.kafka_bootstrap_servers.split(",") if part.strip())
    if not servers:
        raise ConfigError("KAFKA_BOOTSTRAP_SERVERS is empty: set host:port of one or more brokers")
    config: dict[str, Any] = {"bootstrap.servers": servers, "security.protocol": settings.kafka_security_protocol,
                              "client.id": f"event-collector-{settings.server_environment}"}
    if settings.kafka_security_protocol.startswith("sasl_"):
        if not settings.kafka_sasl_username:
            raise ConfigError(f"KAFKA_SECURITY_PROTOCOL={settings.kafka_security_protocol} needs KAFKA_SASL_USERNAME "
                              "and KAFKA_SASL_PASSWORD")
        config.update({"sasl.mechanism": settings.kafka_sasl_mechanism, "sasl.username": settings.kafka_sasl_username,
                       "sasl.password": settings.kafka_sasl_password})
    if settings.kafka_security_protocol.endswith("ssl"):
        for variable, key in (("kafka_ssl_ca_location", "ssl.ca.location"),
                              ("kafka_ssl_certificate_location", "ssl.certificate.location"),
                              ("kafka_ssl_key_location", "ssl.key.location")):
            path = getattr(settings, variable)
            if path:
                if not Path(path).is_file():
                    raise ConfigError(f"{variable.upper()}={path!r}: no such file")
                config[key] = path
        if settings.kafka_ssl_key_password:
            config["ssl.key.password"] = settings.kafka_ssl_key_password
    return config


def secrets(settings: Settings) -> list[str]:
    """Values no log line may show."""
    return [settings.kafka_sasl_password, settings.kafka_ssl_key_password]
