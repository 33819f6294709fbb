"""The backbone registry: one file per family of nets, each entry registered beside its
builder (see `registry.py`)."""
