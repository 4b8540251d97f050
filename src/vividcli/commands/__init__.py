"""Sub-command groups of `vividvr`, each a Typer app in its own module (mounted by `vividcli.cli`)."""
