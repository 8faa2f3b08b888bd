"""`motorwatch demo`."""

from motorwatch.commands._pending import pending

cli = pending("demo", "issue 7, demo: needs the simulator, feature worker, models and scorer")
