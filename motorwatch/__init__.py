"""The motorwatch command line and the shared configuration that wires the stages together."""

__version__ = "0.1.0"
