"""Checking through the collector's receipts (POST /v1/receipts): the deployment says what became of each id.

A receipt says whether an event is indexed, not how many times, so this check cannot see duplicates. It
asks with the credentials that sent the events (only their sender is told about them), for the ids not yet
indexed, 1,000 per request, and obeys the per-caller rate limit's Retry-After.
"""

from __future__ import annotations

import aiohttp

from ..exceptions import CheckRefused, CheckUnavailable
from .arguments import Plan
from .asking import PollResult, error_text, post_json
from .sender import credentials_header

IDS_PER_REQUEST = 1000
STATES = ("indexed", "dead_lettered", "pending", "in_flight", "unknown")


class ReceiptsCheck:
    sees_duplicates = False

    def __init__(self, plan: Plan, session: aiohttp.ClientSession) -> None:
        self.plan = plan
        self.session = session
        self.url = f"{plan.url}/v1/receipts"
        self.headers = {"Authorization": credentials_header(plan)}

    def describe(self) -> str:
        return f"receipts {self.url} (a receipt cannot show duplicates)"

    async def poll(self, outstanding: list[str]) -> PollResult:
        result = PollResult()
        for start in range(0, len(outstanding), IDS_PER_REQUEST):
            try:
                await self._ask(outstanding[start:start + IDS_PER_REQUEST], result)
            except CheckUnavailable as exc:
                result.error = str(exc)
                return result
        return result

    async def _ask(self, ids: list[str], result: PollResult) -> None:
        status, answer, retry_after = await post_json(self.session, "receipts", self.url, {"ids": ids},
                                                      self.plan.timeout_seconds, self.headers)
        if status in (429, 503) or status >= 500:
            result.retry_after_seconds = retry_after
            raise CheckUnavailable(f"receipts answered {status}{error_text(answer)}")
        if status == 404:
            raise CheckRefused(f"{self.url} answered 404: this collector has no receipts route (an older version?); "
                               "check through OpenSearch with --opensearch URL")
        if status != 200:
            raise CheckRefused(f"receipts refused verify's request ({status}{error_text(answer)})")
        receipts = answer.get("receipts") if isinstance(answer, dict) else None
        if not isinstance(receipts, dict):
            raise CheckRefused(f"{self.url} answered 200 without a receipts object: not the receipts route?")
        for log_id in ids:
            receipt = receipts.get(log_id)
            state = receipt.get("state") if isinstance(receipt, dict) else None
            if state == "indexed":
                result.documents[log_id] = 1
            else:
                result.states[log_id] = receipt if state in STATES else {"state": "unknown"}
