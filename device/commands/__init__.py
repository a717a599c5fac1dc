"""One module per `crowdcap` subcommand; see `device.cli.COMMANDS`."""
