"""`pipeline verify`: check every manifest, shard and head of the configured dataset, and say
what is wrong and which stage to re-run."""

from __future__ import annotations

import logging

from pipeline.errors import PipelineError
from pipeline.head import read_checkpoint
from pipeline.manifests import manifest_problems
from pipeline.params import Params
from pipeline.shards import shard_directory_problems

log = logging.getLogger("pipeline")


def run(params: Params) -> None:
    """Check the outputs of every split and net; log one line per problem and raise a
    PipelineError counting them, or log that all is well."""
    layout, train = params.layout, params.dataset.train_split
    problems: list[str] = []
    checked = 0
    for split in params.splits(None):
        files, found = manifest_problems(layout.manifests(split))
        checked, problems = checked + files, problems + found
    directories = [(layout.patches(train), "sample")] + [
        (cache(net, split), writer)
        for cache, writer in ((layout.features, "features"), (layout.dense, "dense"))
        for net in params.features.nets
        for split in params.splits(None)
    ]
    for directory, writer in directories:
        files, found = shard_directory_problems(directory, writer)
        checked, problems = checked + files, problems + found
    for net in params.features.nets:
        for method, writer in (("head", "fit-head"), ("weak", "fit-weak"), ("cam", "fit-cam")):
            checked += 1
            try:
                read_checkpoint(layout.head(net, method), net, writer)
            except PipelineError as err:
                problems.append(str(err))
    for line in problems:
        log.warning("%s", line)
    if problems:
        raise PipelineError(f"verify: {len(problems)} problems in {checked} files (listed above)")
    log.info(
        "verify: %d files of %s checked, all as their stages wrote them", checked, layout.dataset
    )
