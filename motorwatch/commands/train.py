"""`motorwatch train`."""

from motorwatch.commands._pending import pending

cli = pending("train", "issue 5, models")
