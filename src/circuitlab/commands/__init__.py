"""One module per ``circuitlab`` subcommand group; each registers itself with :func:`circuitlab.cli.command`."""
