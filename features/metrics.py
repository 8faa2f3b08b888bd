"""Prometheus metrics of the feature worker (defined once; dead letters are counted by
``motorwatch_dead_letters_total{stage="features"}`` in :mod:`ingest.deadletter`)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# outcome: processed (went into the windows), late, duplicate, invalid (failed decoding).
READINGS = Counter(
    "motorwatch_features_readings_total",
    "Readings consumed by the feature worker, by outcome.",
    ["outcome"],
)
EMITTED = Counter(
    "motorwatch_features_emitted_total",
    "Messages produced to sensor.features: feature vectors, and stale markers of silent assets.",
    ["kind"],
)
LATENCY = Histogram(
    "motorwatch_features_batch_seconds",
    "Processing time of one polled batch, from poll to commit.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
WAITING = Gauge(
    "motorwatch_features_readings_waiting",
    "Accepted readings waiting out the grace period (processed once their asset's clock passes them).",
)
ASSETS = Gauge("motorwatch_features_assets_tracked", "Assets whose state the feature worker holds.")
STATE_BYTES = Gauge("motorwatch_features_state_bytes", "Bytes of feature state held in memory.")
CHECKPOINTS = Counter(
    "motorwatch_features_checkpoints_total", "State snapshots written (then offsets committed)."
)
