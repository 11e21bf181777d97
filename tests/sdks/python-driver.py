"""Sends COUNT messages of mixed types through segment-analytics-python or rudder-sdk-python, paced over
SECONDS, then flushes.  usage: python python-driver.py segment|rudder URL WRITE_KEY COUNT SECONDS

One JSON line per fact on stdout: {"created": id} for each message the SDK queued, {"ok": [ids]} for a
batch its HTTP call returned from (the SDK's own success: 2xx for Segment's, exactly 200 for Rudder's),
{"gave_up": [ids], "reason": …} for a batch it handed to on_error (its retries spent, or a refusal), and
{"queue_full": id} for a message its queue refused, {"failed_attempt": …} for each attempt that failed; then {"done": true} once flush() returned."""

import json
import logging
import sys
import threading
import time

sdk, url, write_key, count, seconds = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
if sdk == "segment":
    from segment.analytics import Client, consumer
else:
    from rudderstack.analytics import Client, consumer

_lock = threading.Lock()


def out(fact: dict) -> None:
    with _lock:
        sys.stdout.write(json.dumps(fact) + "\n")
        sys.stdout.flush()


# The SDK's consumer calls request.post once per attempt; it returns only on the SDK's idea of success and
# raises otherwise. Wrapped where the consumer looks it up, so each delivered batch is reported.
_post = consumer.post


def reporting_post(*args, batch, **kwargs):
    try:
        response = _post(*args, batch=batch, **kwargs)
    except Exception as error:
        out({"failed_attempt": repr(error)[:200]})  # the consumer retries it, or gives the batch up
        raise
    out({"ok": [message["messageId"] for message in batch]})
    return response


consumer.post = reporting_post
logging.basicConfig(level=logging.WARNING, stream=sys.stderr)


def on_error(error, batch) -> None:
    out({"gave_up": [message["messageId"] for message in batch], "reason": repr(error)})


# Generous retries: a collector killed for a few seconds costs a few, never a give-up (the default is 10).
# gzip as each SDK does by default (Rudder's is on, Segment's off).
client = Client(write_key, host=url, max_retries=20, on_error=on_error, gzip=(sdk == "rudder"), timeout=10)

calls = [
    lambda n: client.track(f"u{n % 50}", "Order Completed", {"n": n, "revenue": 9.5}),
    lambda n: client.identify(f"u{n % 50}", {"plan": "pro", "n": n}),
    lambda n: client.page(f"u{n % 50}", "Docs", "Home", {"path": "/home", "n": n}),
    lambda n: client.screen(f"u{n % 50}", "Mobile", "Main", {"n": n}),
    lambda n: client.group(f"u{n % 50}", f"g{n % 7}", {"size": n}),
    lambda n: client.alias(f"anon-{n}", f"u{n % 50}"),
]

started = time.monotonic()
for n in range(count):
    queued, message = calls[n % len(calls)](n)
    out({"created": message["messageId"]} if queued else {"queue_full": message["messageId"]})
    due = started + (n + 1) * seconds / count
    if due > time.monotonic():
        time.sleep(due - time.monotonic())  # the pace of the scenario's sender
client.flush()
out({"done": True})
client.shutdown()
