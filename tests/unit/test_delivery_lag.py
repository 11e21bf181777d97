"""observe_delivery_lag counts a batch into the histogram's buckets itself: it must give what one observe() an
event gives."""

import time

from prometheus_client import CollectorRegistry, Histogram

from event_collector import metrics


def samples(histogram) -> dict:
    [family] = histogram.collect()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value for sample in family.samples
            if not sample.name.endswith("_created")}


def test_a_batch_counted_at_once_gives_the_figures_of_one_observe_an_event(monkeypatch):
    now = 2_000_000_000.0
    lags = [0.0, 0.05, 0.051, 0.3, 1, 59.9, 60, 3599, 3600, 3601, 90000, -2.0]
    reference = Histogram("reference_lag_seconds", "", buckets=metrics.delivery_lag._upper_bounds[:-1],
                          registry=CollectorRegistry())
    for lag in lags:
        reference.observe(max(0.0, now - (now - lag)))
    bulk = Histogram("reference_lag_seconds", "", buckets=metrics.delivery_lag._upper_bounds[:-1],
                     registry=CollectorRegistry())
    monkeypatch.setattr(metrics, "delivery_lag", bulk)
    monkeypatch.setattr(time, "time", lambda: now)
    metrics.observe_delivery_lag(now - lag for lag in lags)
    assert samples(bulk) == samples(reference)
    assert samples(bulk)[("reference_lag_seconds_count", ())] == len(lags)
