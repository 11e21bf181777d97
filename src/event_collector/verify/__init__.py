"""`event-collector verify` (docs/verify.md): the fault suite's check, for an operator's own deployment.

It sends N events through the collector's public URL at a steady rate (pacing.py, sender.py), keeps every
answer, then watches each event answered 2xx until it is indexed or a deadline passes (run.py), through
OpenSearch (opensearch_check.py: counts documents, so duplicates show) or through the collector's receipts
(receipts_check.py: no duplicates visible), and reports what it saw (report.py). It talks to the deployment
only over HTTP, as a client would: it may import exceptions, nothing of the collector's pipeline.
"""
