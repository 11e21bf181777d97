"""AWS Signature Version 4 for Amazon OpenSearch Service (`es`) and OpenSearch Serverless (`aoss`).

The signing is botocore's own (`SigV4Auth`), and so is the credential chain: environment, shared config
and profile, web identity, container and instance roles. Credentials that expire are refreshable ones:
`get_frozen_credentials` renews them before they run out, and a refresh may block on the network, so the
client signs in a thread (`OpenSearchClient`), never on the event loop.
"""

from __future__ import annotations

from typing import Any

from ..exceptions import ConfigError


class SigV4Signer:
    def __init__(self, credentials: Any, region: str, service: str) -> None:
        self._credentials = credentials
        self.region = region
        self.service = service

    @classmethod
    def from_aws_chain(cls, region: str, service: str) -> "SigV4Signer":
        import botocore.session

        session = botocore.session.Session()
        region = region or session.get_config_variable("region") or ""
        if not region:
            raise ConfigError("OPEN_SEARCH_AUTH=sigv4 needs the AWS region of the domain or collection: set AWS_REGION")
        credentials = session.get_credentials()
        if credentials is None:
            raise ConfigError("OPEN_SEARCH_AUTH=sigv4: no AWS credentials found in the standard chain (AWS_ACCESS_KEY_ID "
                              "and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, web identity, container or instance role)")
        return cls(credentials, region, service)

    def sign(self, method: str, url: str, body: bytes | None, headers: dict[str, str]) -> dict[str, str]:
        """The headers to send: `headers` plus the date, the payload hash, the session token and Authorization."""
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest

        # Frozen: one consistent key pair for this request, renewed beforehand when it is about to expire.
        credentials = self._credentials.get_frozen_credentials()
        request = AWSRequest(method=method, url=url, data=body or b"", headers=dict(headers))
        auth = SigV4Auth(credentials, self.service, self.region)
        # OpenSearch Serverless requires the payload hash as a header; it is signed like every x-amz-* header.
        request.headers["X-Amz-Content-SHA256"] = auth.payload(request)
        auth.add_auth(request)
        return dict(request.headers.items())
