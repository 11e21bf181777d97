"""Checking in OpenSearch: how many documents each of the run's ids has, over the collector's indices.

One search finds them all: the run's ids share the prefix `verify-<run id>-`, and a composite aggregation on
`log_id` counts documents per id, a page of 10,000 ids per request. Counting by `log_id` rather than
fetching by `_id` also finds a copy that landed under another `_id` or in another index: a duplicate.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import aiohttp

from ..exceptions import CheckRefused, CheckUnavailable
from .arguments import Plan
from .asking import PollResult, error_text, post_json

_PAGE_SIZE = 10_000


class OpenSearchCheck:
    sees_duplicates = True

    def __init__(self, plan: Plan, session: aiohttp.ClientSession, run_id: str) -> None:
        assert plan.opensearch is not None
        self.plan = plan
        self.session = session
        self.prefix = f"verify-{run_id}-"
        self.url = (f"{plan.opensearch}/{quote(plan.index_pattern, safe=',*')}/_search"
                    "?ignore_unavailable=true&allow_no_indices=true")
        self.headers = {}
        if plan.opensearch_auth is not None:
            self.headers["Authorization"] = aiohttp.BasicAuth(*plan.opensearch_auth).encode()

    def describe(self) -> str:
        return f"OpenSearch {self.plan.opensearch}, indices {self.plan.index_pattern}"

    async def poll(self, outstanding: list[str]) -> PollResult:
        """Every id of the run found so far (the search is by prefix, so `outstanding` is not needed)."""
        result = PollResult()
        after = None
        try:
            while True:
                answer = await self._page(after)
                try:
                    buckets, after = read_page(answer, result)
                except (AttributeError, KeyError, TypeError, ValueError):
                    raise CheckRefused(f"{self.plan.opensearch} did not answer as OpenSearch does: is it OpenSearch?"
                                       ) from None
                if not after or len(buckets) < _PAGE_SIZE:
                    return result
        except CheckUnavailable as exc:
            result.error = str(exc)
            return result

    async def _page(self, after: dict | None) -> dict[str, Any]:
        composite: dict[str, Any] = {"size": _PAGE_SIZE, "sources": [{"id": {"terms": {"field": "log_id"}}}]}
        if after:
            composite["after"] = after
        body = {"size": 0, "track_total_hits": False, "query": {"prefix": {"log_id": self.prefix}},
                "aggs": {"ids": {"composite": composite}}}
        status, answer, _ = await post_json(self.session, "OpenSearch", self.url, body, self.plan.timeout_seconds,
                                            self.headers)
        if status in (401, 403):
            raise CheckRefused(f"OpenSearch refused verify's search ({status}{error_text(answer)}): check the "
                               "credentials (URL user info or --opensearch-user/--opensearch-password)")
        if status == 400 and _all_shards_unsearchable(answer):
            # Every index of the pattern lacks the collector's template (say, before the first bulk made the
            # collector's own): OpenSearch refuses the whole search. That is a page with nothing in it.
            failures = answer["error"]["failed_shards"]
            return {"_shards": {"total": len(failures), "failed": len(failures), "failures": failures}}
        if status == 400:
            raise CheckRefused(f"OpenSearch refused verify's search (400{error_text(answer)}): is "
                               f"{self.plan.index_pattern!r} the collector's indices, log_id a keyword?")
        if status != 200 or not isinstance(answer, dict):
            raise CheckUnavailable(f"OpenSearch answered {status}{error_text(answer)}")
        return answer


def read_page(answer: dict[str, Any], result: PollResult) -> tuple[list[dict], dict | None]:
    """Add one page of a search's answer to `result`; return its buckets and the key to the next page."""
    shards = answer.get("_shards") or {}
    if shards.get("failed"):
        failures = shards.get("failures") or []
        # An index whose log_id is not a keyword (made without the collector's template) can never answer this
        # search: it is named in the report and the others are counted. Any other failure may pass (a shard
        # moving, a node restarting): counts from the shards that answered would be too low, so this page is
        # not taken and the next poll asks again.
        # OpenSearch lists the failures of one index and reason once, however many of its shards failed.
        if not failures or not all(map(_unsearchable, failures)):
            raise CheckUnavailable(f"{shards['failed']} of {shards.get('total')} shards did not answer")
        result.unsearchable.update(failure["index"] for failure in failures)
    page = (answer.get("aggregations") or {}).get("ids") or {}
    buckets = page.get("buckets") or []
    result.documents.update((bucket["key"]["id"], int(bucket["doc_count"])) for bucket in buckets)
    return buckets, page.get("after_key")


def _unsearchable(failure: dict[str, Any]) -> bool:
    """A shard failure that asking again will not mend: its index's log_id is not a keyword."""
    return (failure.get("reason") or {}).get("type") == "illegal_argument_exception" and "index" in failure


def _all_shards_unsearchable(answer: Any) -> bool:
    error = answer.get("error") if isinstance(answer, dict) else None
    failures = error.get("failed_shards") if isinstance(error, dict) else None
    return (error.get("type") == "search_phase_execution_exception" and isinstance(failures, list)
            and bool(failures) and all(isinstance(f, dict) and _unsearchable(f) for f in failures))
