"""The dataset as tables and pixels: VOC reading, image sets, decoding, the synthetic devkit,
tiling, labels, sampling, manifests and the training patch shards. Imports only `core`."""
