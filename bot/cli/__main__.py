"""`python -m bot.cli` runs the `cosmo` command."""

from bot.cli.main import main

main()
