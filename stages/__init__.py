"""The DVC stages: one module per stage, each a `run` function that reads the params, resolves
paths, calls the library, writes its outputs and reports. `stages.cli` gathers them as the
`pipeline` command; no stage imports another."""
