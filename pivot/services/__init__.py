"""One function per command, for the CLI to call."""
