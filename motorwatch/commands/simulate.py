"""`motorwatch simulate`."""

from motorwatch.commands._pending import pending

cli = pending("simulate", "issue 3, simulator")
