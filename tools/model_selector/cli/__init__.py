"""The `model-selector` command line: a small `main` and one module per subcommand."""
