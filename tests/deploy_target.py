"""A scrape target for the deploy tests: motorwatch's real metrics registry on a loopback port.

Stand-in for ``motorwatch demo --metrics-port PORT`` until the demo exists (lead: switch
``tests/test_deploy_live.py``'s ``target`` fixture to start the demo instead, and drop this file).

It imports the packages' metrics modules (so every motorwatch metric is exported under its real name,
help and type), drives ingest's real dead-letter path with a few bad readings, and moves the scorer's
counters every 100 ms so rates are non-zero. Prints the port on stdout, then reads commands on stdin:

    alerts PRIORITY N     set the scorer's active-alert gauge (what the fleet rules alert on)
"""

from __future__ import annotations

import sys
import threading
import time

import numpy as np
from prometheus_client import start_http_server

from features import metrics as features
from ingest import topics
from ingest.deadletter import dead_letter
from ingest.inproc import InProcessBus
from ingest.profiles import load_profile
from ingest.schemas import decode_readings
from scoring import metrics as scorer


def dead_letter_bad_readings() -> int:
    """Send good and bad readings through the in-process bus and dead-letter the rejects."""
    bus = InProcessBus()
    bus.create_topics([topics.READINGS, topics.READINGS_DLQ], partitions=2)
    producer = bus.producer()
    good = b'{"v":1,"asset_id":"m00001","ts":1700000000.0,"values":{"temperature_c":60.0}}'
    producer.send_batch(topics.READINGS, [(b"m00001", good), (b"m00002", b"not json"), (b"m00003", b"{}")])
    producer.flush()
    consumer = bus.consumer([topics.READINGS], "deploy-target")
    records = consumer.poll_batch(100, 1.0)
    _, rejections = decode_readings([r.value for r in records], load_profile("motor"))
    sent = dead_letter(producer, records, rejections, stage="features")
    features.READINGS.labels(outcome="invalid").inc(sent)
    producer.flush()
    consumer.commit()
    bus.close()
    return sent


def tick(stop: threading.Event) -> None:
    """Move the feature worker's and scorer's counters and histograms like a slow live stream."""
    rng = np.random.default_rng(0)
    assets = [f"m{i:05d}" for i in range(1, 21)]
    while not stop.wait(0.1):
        risk = rng.random(len(assets))
        features.READINGS.labels(outcome="processed").inc(len(assets))
        features.READINGS.labels(outcome="late").inc(1)
        features.EMITTED.labels(kind="vector").inc(len(assets))
        features.LATENCY.observe(0.003)
        features.ASSETS.set(len(assets))
        features.STATE_BYTES.set(4096 * len(assets))
        scorer.MESSAGES_IN.labels(topic=topics.FEATURES).inc(len(assets))
        scorer.MESSAGES_OUT.labels(topic=topics.SCORES).inc(len(assets))
        scorer.BATCH_SIZE.observe(len(assets))
        scorer.INFERENCE_SECONDS.observe(0.002)
        scorer.LATENCY.observe(0.04)
        for r in risk:
            scorer.FLEET_RISK.observe(float(r))
        scorer.set_top_risk(assets, risk, k=5)
        scorer.LAG.labels(topic=topics.FEATURES).set(0)


def main() -> None:
    scorer.MODEL.info({"version": "v0001"})
    scorer.MODEL_CREATED.set(time.time() - 86400)
    dead_letter_bad_readings()
    server, _ = start_http_server(0, addr="127.0.0.1")
    stop = threading.Event()
    threading.Thread(target=tick, args=(stop,), daemon=True).start()
    print(server.server_port, flush=True)
    for line in sys.stdin:
        match line.split():
            case ["alerts", priority, count]:
                scorer.ACTIVE_ALERTS.labels(priority=priority).set(float(count))
        print("ok", flush=True)
    stop.set()


if __name__ == "__main__":
    main()
