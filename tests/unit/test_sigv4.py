"""AWS Signature V4: the signature the client puts on the wire is botocore's reference signing of the same
request, with fixed credentials from the standard chain and a frozen clock; credentials are renewed before
they expire."""

import datetime
import hashlib

import botocore.auth
import pytest
from aiohttp import web
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials, RefreshableCredentials

from event_collector.settings import load_settings
from event_collector.shipper.client import OpenSearchClient
from event_collector.shipper.sigv4 import SigV4Signer

ACCESS_KEY, SECRET_KEY, TOKEN = "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "session-token-example"
FROZEN = datetime.datetime(2026, 11, 28, 9, 15, 2)


@pytest.fixture
def aws_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_SESSION_TOKEN", TOKEN)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: FROZEN)


@pytest.fixture
async def recorder():
    """A real HTTP server on loopback that keeps every request as it arrived."""
    requests = []

    async def record(request: web.Request) -> web.Response:
        requests.append((request.method, request.raw_path, dict(request.headers), await request.read()))
        return web.json_response({"errors": False, "items": []})

    runner = web.AppRunner(_app(record))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}", requests
    await runner.cleanup()


def _app(handler) -> web.Application:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    return app


def reference_authorization(base: str, method: str, raw_path: str, headers: dict, body: bytes) -> str:
    """botocore's own signing of the request as received: the headers it says it signed, the body, the URL."""
    signed = headers["Authorization"].split("SignedHeaders=")[1].split(",")[0].split(";")
    lowered = {name.lower(): value for name, value in headers.items()}
    request = AWSRequest(method=method, url=base + raw_path, data=body, headers={name: lowered[name] for name in signed})
    SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY, TOKEN), "aoss", "eu-west-1").add_auth(request)
    return request.headers["Authorization"]


async def test_the_signature_on_the_wire_is_botocores_reference_signature(aws_environment, recorder):
    base, requests = recorder
    settings = load_settings({"OPEN_SEARCH_DNS": base, "OPEN_SEARCH_AUTH": "sigv4", "AWS_REGION": "eu-west-1",
                              "OPEN_SEARCH_AWS_SERVICE": "aoss"}, env_file=None)
    client = OpenSearchClient.from_settings(settings)
    await client.open()
    body = b'{"create":{"_index":"events_local_2026-11","_id":"a"}}\n{"log_id":"a"}\n'
    try:
        assert (await client.bulk(body))[0] == 200
        assert (await client.bulk(body.replace(b'"a"', b'"b"')))[0] == 200
    finally:
        await client.close()

    (method, raw_path, headers, received), (_, _, changed_headers, changed_body) = requests
    assert received == body and method == "POST" and raw_path.startswith("/_bulk?filter_path=")
    authorization = headers["Authorization"]
    assert authorization.startswith(f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/20261128/eu-west-1/aoss/aws4_request, ")
    signed = authorization.split("SignedHeaders=")[1].split(",")[0].split(";")
    assert {"host", "x-amz-date", "x-amz-content-sha256", "x-amz-security-token", "content-type"} <= set(signed)
    assert headers["X-Amz-Date"] == "20261128T091502Z"
    assert headers["X-Amz-Content-SHA256"] == hashlib.sha256(body).hexdigest()
    assert headers["X-Amz-Security-Token"] == TOKEN
    assert authorization == reference_authorization(base, method, raw_path, headers, received)

    # Another body, another signature: the signature covers the payload's hash, and the hash is the body's.
    assert changed_headers["X-Amz-Content-SHA256"] == hashlib.sha256(changed_body).hexdigest()
    assert changed_headers["Authorization"] != authorization
    assert changed_headers["Authorization"] == reference_authorization(base, method, raw_path, changed_headers,
                                                                       changed_body)
    first_with_changed_body = {**headers, "X-Amz-Content-SHA256": hashlib.sha256(changed_body).hexdigest()}
    assert reference_authorization(base, method, raw_path, first_with_changed_body, changed_body) != authorization


def test_refreshable_credentials_are_renewed_before_they_expire(aws_environment):
    now = {"time": datetime.datetime(2026, 11, 28, 9, 0, tzinfo=datetime.timezone.utc)}
    issued = iter(["AKIDFIRST", "AKIDSECOND"])

    def refresh():
        return {"access_key": next(issued), "secret_key": SECRET_KEY, "token": TOKEN,
                "expiry_time": (now["time"] + datetime.timedelta(hours=1)).isoformat()}

    first = refresh()
    credentials = RefreshableCredentials(first["access_key"], first["secret_key"], first["token"],
                                         datetime.datetime.fromisoformat(first["expiry_time"]), refresh, "test",
                                         time_fetcher=lambda: now["time"])
    signer = SigV4Signer(credentials, "eu-west-1", "es")
    url = "https://search-domain.eu-west-1.es.amazonaws.com/_bulk"
    assert "Credential=AKIDFIRST/" in signer.sign("POST", url, b"{}\n", {})["Authorization"]
    now["time"] += datetime.timedelta(minutes=55)  # within botocore's advisory window before expiry
    assert "Credential=AKIDSECOND/" in signer.sign("POST", url, b"{}\n", {})["Authorization"]
