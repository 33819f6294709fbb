"""The adaptation layers and every kind of trained layers: the layers, their contract
(checkpoint, reader, metrics) and their training. Imports `core`, `data`, `features`."""
