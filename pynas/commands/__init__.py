"""Implementations of the ``pynas`` subcommands (the CLI module only parses flags)."""
