"""`motorwatch alerts`."""

from motorwatch.commands._pending import pending

cli = pending("alerts", "issue 6, scorer")
