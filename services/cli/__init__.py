"""The `dynamics` command line."""
