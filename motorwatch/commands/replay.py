"""`motorwatch replay`."""

from motorwatch.commands._pending import pending

cli = pending("replay", "issue 7, replay")
