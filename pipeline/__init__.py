"""voc-transfer library: functions and data formats, no CLI. Six subpackages stacked as layers,
each importing only itself and those below: `core` (params, layout, errors, files, shards,
parallel work), `data` (VOC, tiling, labels, patches), `features` (backbones and their caches),
`trained` (every kind of trained layers), `scoring` (scores, AP, maps, localization) and
`action` (the Action task). docs/method.md lists every module."""
