"""One module per subcommand; each exposes a ``run_*`` function that returns the exit code."""
