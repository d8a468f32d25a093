"""Long-running roles: one `run_*` coroutine per role, each stopping cleanly when `stop` is set."""
