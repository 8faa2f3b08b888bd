"""Topic names. Every topic is keyed by asset id, so per-asset order holds within a partition."""

READINGS = "sensor.readings"
READINGS_DLQ = "sensor.readings.dlq"
FEATURES = "sensor.features"
FEATURES_DLQ = "sensor.features.dlq"
SCORES = "maintenance.scores"
ALERTS = "maintenance.alerts"
SCHEDULE = "maintenance.schedule"
# Maintenance performed on an asset (by the simulator's crew, or a plant's CMMS): resets health.
MAINTENANCE = "maintenance.events"

ALL = (READINGS, READINGS_DLQ, FEATURES, FEATURES_DLQ, SCORES, ALERTS, SCHEDULE, MAINTENANCE)


def dead_letter_topic(topic: str) -> str:
    """Where bad messages read from ``topic`` go."""
    return f"{topic}.dlq"
