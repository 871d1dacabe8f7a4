"""``tidlc`` subcommands that live in their own modules (see ``tidlc.cli.COMMAND_MODULES``)."""
