"""voc-transfer library: VOC parsing, patch tiling and labelling, shards, nets, features, heads,
scores, evaluation and heat maps: functions and data formats, no CLI. Where outputs live is one
module of it (`layout.py`), so that stage modules never need each other; docs/method.md lists
every module."""
