"""The DVC stages: one module per stage, each a click command of the `pipeline` CLI."""
