"""One module per ``motorwatch`` subcommand, each exposing a click command named ``cli``."""
