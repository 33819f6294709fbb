"""voc-transfer library: VOC parsing, patch tiling and labelling, shards, nets, features, heads,
scores, metrics and heat maps. Pure functions and data formats; no CLI, no file layout."""
