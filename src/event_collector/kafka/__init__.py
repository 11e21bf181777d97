"""Kafka (docs/scale.md): ACK_MODE=kafka produces accepted events to a topic; `event-collector index` consumes
them in a group and bulk-indexes them with the shipper's code.

Here are the client configuration (config.py), the records' format (records.py), the collectors' side
(producer.py, collector.py), the indexer (indexer.py, with membership.py, dead_letter_writer.py and
batch.py) and the dead-letter topic's commands (dead_letter.py). It may import the foundations (exceptions,
settings, metrics, envelope, retry, buffer) and shipper (the bulk body and classification, the client, the
template), never pending, lifecycle or api.
"""
