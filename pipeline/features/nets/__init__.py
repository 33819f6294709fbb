"""The backbone registry: one file per family of nets (`alexnet.py`, `efficientnet_lite.py`,
`tiny.py`), each declaring its entries beside their builders; `registry.py` finds them."""
