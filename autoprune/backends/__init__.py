"""Search backends: ``optuna`` (embedded, in-process). Each is the only module importing its engine."""
