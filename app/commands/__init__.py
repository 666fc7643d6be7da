"""CLI subcommands that run the engine on local files."""
