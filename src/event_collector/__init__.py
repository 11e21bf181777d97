"""The event collector: apps POST events, it answers fast, keeps what it acknowledged, and bulk-indexes every
event into OpenSearch exactly once. docs/architecture.md draws its rooms and the arrows allowed between them."""
