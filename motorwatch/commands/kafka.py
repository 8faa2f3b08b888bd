"""`motorwatch kafka`."""

from motorwatch.commands._pending import pending

cli = pending("kafka", "issue 2, local broker")
