"""`motorwatch evaluate`."""

from motorwatch.commands._pending import pending

cli = pending("evaluate", "issue 5, models")
