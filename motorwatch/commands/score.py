"""`motorwatch score`."""

from motorwatch.commands._pending import pending

cli = pending("score", "issue 6, scorer")
