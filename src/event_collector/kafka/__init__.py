"""Kafka (docs/scale.md): ACK_MODE=kafka produces accepted events to a topic; `event-collector index` consumes
them in a group and bulk-indexes them with the shipper's code."""
