"""`motorwatch features`."""

from motorwatch.commands._pending import pending

cli = pending("features", "issue 4, feature worker")
