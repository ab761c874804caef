"""The `cosmo` command line."""
