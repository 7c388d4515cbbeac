"""One module per command: ``run(cfg, run_dir)`` builds the objects and hands them to the engine."""
