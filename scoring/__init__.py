"""The scorer worker: batched inference, alert policy, maintenance schedule, Prometheus metrics."""
