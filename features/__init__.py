"""Feature definitions from one spec, computed incrementally in the stream and vectorised over logs."""
