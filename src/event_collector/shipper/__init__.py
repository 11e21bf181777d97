"""Shipping: from the buffer to OpenSearch's _bulk API, and nothing else.

The batcher cuts the buffer into batches; each sender ships one batch at a time through the shipper
(worker.py: one _bulk request, classified per event by bulk.py) over the client (client.py: nodes,
credentials, failover) and its transport (transport.py: the seam tests replace); the template guard puts
the index template in place first. What OpenSearch answered goes up as an `Outcome` (outcomes.py) to the
policy the sender was given. May import the foundations (exceptions, settings, metrics, retry, envelope,
outcomes, buffer); never `pending`, `delivery`, `lifecycle`, `kafka` or `api` (tests/unit/test_layering.py).
"""
