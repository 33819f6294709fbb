"""The parameters schema: every knob of ``params.yaml``, its type, range and meaning.

This is the one place that documents and checks the parameters: `load_params` validates a
whole file at load, and a value outside its rule, a missing key or an unknown key (with the
closest known one) is a one-line PipelineError naming the file, the key and the rule.
"""

from __future__ import annotations

import difflib
import math
import reprlib
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from pipeline.core.errors import PipelineError
from pipeline.core.layout import Layout

# A 500x375 image (VOC's usual size) may give at most this many patches: the default grid gives
# 512; a min_overlap close to 1 would give millions and run for days.
MAX_PATCHES_PER_IMAGE = 20_000
REFERENCE_IMAGE = (500, 375)

Fraction = Annotated[float, Field(gt=0, le=1)]
PositiveInt = Annotated[int, Field(strict=True, ge=1)]
Seed = Annotated[int, Field(strict=True, ge=0)]
NAME_PATTERN = r"^[A-Za-z0-9_+-][A-Za-z0-9_.+-]*$"  # a file name: no separator, no leading dot
Name = Annotated[str, Field(min_length=1, pattern=NAME_PATTERN)]
NAME_WORDS = "(a name: letters, digits, _ . + -, not starting with .)"
Device = Annotated[str, Field(pattern=r"^(auto|cpu|mps|cuda(:[0-9]+)?)$")]
SCHEDULER_PATTERN = r"^(tcp|tls|ucx|ws|wss|inproc)://[^\s/:]+(:[0-9]{1,5})?/?$"


def _listed_once(names: list[str]) -> list[str]:
    """`names` unchanged; ValueError naming those listed more than once."""
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"lists {', '.join(twice)} more than once")
    return names


DistinctNames = Annotated[list[Name], AfterValidator(_listed_once)]


class Block(BaseModel):
    """A params block: every key required, no unknown key, read-only."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Dataset(Block):
    """The VOC year directory read (never written) and how to read it."""

    name: Name = Field(description="names the outputs: manifests/<name>/, data/*/<name>/ ...")
    root: Path = Field(description="a VOC year directory, e.g. /data/VOCdevkit/VOC2007")
    year: Annotated[int, Field(strict=True, ge=2005, le=2100)] = Field(
        description="picks the AP: before 2010 11-point, from 2010 the envelope area"
    )
    train_split: Name = Field(description="the split the head learns from (VOC2012: train)")
    eval_split: Name = Field(description="the split scored and evaluated (VOC2012: val)")
    classes: DistinctNames = Field(min_length=1, description="label i + 1 is classes[i]")
    box_tolerance: Annotated[float, Field(ge=0)] = Field(
        description="pixels a box may reach outside its image and be clipped"
    )

    @model_validator(mode="after")
    def _distinct_splits(self) -> Dataset:
        if self.train_split == self.eval_split:
            raise ValueError(
                f"train_split and eval_split are both {self.train_split!r}: the head would be "
                "evaluated on its training images"
            )
        return self


class Demo(Block):
    """The synthetic dataset `pipeline demo` writes (only at its own root)."""

    root: Path = Field(description="where `pipeline demo` writes; never a real devkit")
    classes: DistinctNames = Field(min_length=1, description="classes drawn in the demo images")
    n_trainval: Annotated[int, Field(strict=True, ge=2)] = Field(
        description="trainval images (halved into train and val)"
    )
    n_test: Annotated[int, Field(strict=True, ge=0)] = Field(
        description="test images; 0 gives the VOC2012 layout (no test split)"
    )
    seed: Seed = Field(description="everything drawn is a function of it")
    actions: DistinctNames = Field(
        description="actions of the demo's persons (VOC names with a drawn pose or prop)"
    )
    n_action_trainval: Annotated[int, Field(strict=True, ge=0)] = Field(
        description="images of persons in ImageSets/Action trainval (halved into train, val)"
    )
    n_action_test: Annotated[int, Field(strict=True, ge=0)] = Field(
        description="images of persons in ImageSets/Action test (0 with n_test 0)"
    )


class Tiling(Block):
    """The multi-scale square patch grid."""

    scales: list[Annotated[float, Field(ge=1)]] = Field(
        min_length=1, description="λ: patch side = min(w, h) / λ (1: the whole short side)"
    )
    min_overlap: Annotated[float, Field(ge=0, lt=1)] = Field(
        description="least overlap of neighbouring patches, as a fraction of the side"
    )
    patch_size: Annotated[int, Field(strict=True, ge=16, le=1024)] = Field(
        description="pixels of a stored and fed patch"
    )

    @model_validator(mode="after")
    def _bounded_grid(self) -> Tiling:
        width, height = REFERENCE_IMAGE
        n = 0
        for scale in self.scales:
            side = min(width, height) / scale
            per_axis = [
                1
                if length - side < 1e-6
                else math.ceil((length - side) / (side * (1 - self.min_overlap)) - 1e-9) + 1
                for length in (width, height)
            ]
            n += per_axis[0] * per_axis[1]
        if n > MAX_PATCHES_PER_IMAGE:
            raise ValueError(
                f"scales and min_overlap give {n} patches for a {width}x{height} image, more "
                f"than {MAX_PATCHES_PER_IMAGE} (the defaults give 512)"
            )
        return self


class Labeling(Block):
    """When an object qualifies for a patch (|P ∩ B| against |P| and |B|)."""

    min_patch_cover: Fraction = Field(description="an object qualifies if |P ∩ B| >= this |P|")
    min_object_cover: Fraction = Field(description="... and |P ∩ B| >= this |B|")
    max_objects: PositiveInt = Field(description="more qualifying objects make it ignored")


class Sampling(Block):
    """Which background patches the training set keeps."""

    background_fraction: Fraction = Field(description="background patches kept per image")
    seed: Seed = Field(description="seeds each image's draw with its id")


class Shards(Block):
    """HDF5 patch shards."""

    patches_per_shard: PositiveInt = Field(description="consecutive training patches per file")
    compression: Literal["none", "gzip", "blosc2-lz4", "blosc2-zstd", "jpeg"] = Field(
        description="how the pixels are stored: an HDF5 filter (lossless), or JPEG (lossy)"
    )
    compression_level: Annotated[int, Field(strict=True, ge=0, le=9)] | None = Field(
        description="gzip and Blosc2 level (None: 1 for gzip, 5 for Blosc2); ignored by the others"
    )
    jpeg_quality: Annotated[int, Field(strict=True, ge=1, le=100)] = Field(
        description="quality of jpeg; ignored by the others"
    )


class Features(Block):
    """Which backbones run, where, and how the evaluation split's cache is cut into shards."""

    nets: list[Annotated[str, Field(min_length=1)]] = Field(
        min_length=1, description="backbones whose features dvc repro computes (README)"
    )
    device: Device = Field(description="auto (CUDA when present), cpu, cuda, cuda:N")
    batch_size: PositiveInt = Field(description="patches per forward pass")
    workers: Annotated[int, Field(strict=True, ge=0)] | Literal["auto"] = Field(
        description="DataLoader workers; auto: 0 on CPU, up to 8 on CUDA"
    )
    images_per_shard: PositiveInt = Field(description="evaluation images per feature file")
    cutting: Literal["auto", "pil", "torch"] = Field(
        description="where the evaluation split's patches are cut: pil (loader workers, CPU), "
        "torch (on the features device); auto: torch on CUDA, pil on CPU"
    )
    runtime: Literal["auto", "torch", "openvino"] = Field(
        description="what runs the frozen backbone: torch (PyTorch, the reference), openvino "
        "(the CPU only; its outputs equal PyTorch's to float rounding); auto: openvino on the "
        "CPU for the registry's nets, torch on CUDA and for torchvision: nets. Part of every "
        "cache's identity, with its version"
    )
    precision: Literal["auto", "float32", "bfloat16"] = Field(
        description="of the frozen backbone and of its window rule, patch and dense mode alike "
        "(weights cast once); auto: bfloat16 only where the "
        "device computes it natively (CUDA with bf16, a CPU with AMX or AVX-512-BF16) and for "
        "nets whose bfloat16 descriptors stay within 1% of float32's (the AlexNet geometry: "
        "pre1512, alexnet), else float32. Part of every cache's identity"
    )


class Head(Block):
    """The adaptation layers and their training."""

    layers: Literal[1, 2, 3] = Field(description="2 = FCa + FCb (the paper)")
    hidden: PositiveInt = Field(description="width of FCa")
    dropout: Annotated[float, Field(ge=0, lt=1)] = Field(description="before each linear layer")
    lr: Annotated[float, Field(gt=0)] = Field(description="initial SGD learning rate")
    momentum: Annotated[float, Field(ge=0, lt=1)] = Field(description="SGD momentum")
    weight_decay: Annotated[float, Field(ge=0)] = Field(description="L2 penalty")
    batch_size: PositiveInt = Field(description="patches per SGD step")
    lr_drops: Annotated[int, Field(strict=True, ge=0)] = Field(
        description="divisions of the lr by 10 at hold-out plateaus before the next one stops"
    )
    patience: PositiveInt = Field(description="epochs without hold-out improvement: a plateau")
    max_epochs: PositiveInt = Field(description="stop here at the latest")
    val_fraction: Annotated[float, Field(gt=0, lt=1)] = Field(
        description="training images held out (whole images)"
    )
    seed: Seed = Field(description="seeds initialisation, order and hold-out")
    device: Device = Field(description="auto (CUDA when present), cpu, cuda, cuda:N")


class Scoring(Block):
    """Image scores from patch probabilities."""

    k: Annotated[float, Field(gt=0)] = Field(description="score = mean over patches of y^k")
    cache: Literal["features", "dense"] = Field(
        description="what evaluate and heatmaps score: features (the grid's patches) or dense "
        "(every window of the trunk maps); names the cache directory they read"
    )
    pool: Literal["mean", "max"] = Field(
        description="an image's score: mean of y^k over its patches, or their max of y"
    )
    head: Literal["head", "windows"] = Field(
        description="the adaptation layers evaluate and heatmaps apply: head (fit-head, trained "
        "on the patches) or windows (fit-windows, trained on the dense maps' windows); names "
        "the file data/heads/<dataset>/<net>/<head>.pt"
    )


class ImageLevel(Block):
    """Layers trained from image labels alone; the rest of their schedule is ``head``'s."""

    lr: Annotated[float, Field(gt=0)] = Field(description="initial SGD learning rate")
    images_per_batch: PositiveInt = Field(description="images per SGD step")


class Scratch(Block):
    """NO PRETRAIN: the whole net (its architecture, random weights) trained on the action
    samples; the rest of its schedule is ``head``'s."""

    lr: Annotated[float, Field(gt=0)] = Field(description="initial SGD learning rate")
    batch_size: PositiveInt = Field(description="samples per SGD step")
    max_epochs: PositiveInt = Field(description="stop here at the latest")


class Action(Block):
    """The VOC Action task: persons of ``ImageSets/Action`` and their actions."""

    actions: DistinctNames = Field(
        min_length=2, description="label i is actions[i]; VOC2012: its ten (`other` optional)"
    )
    update_lr: Annotated[float, Field(gt=0)] = Field(
        description="initial lr of the update variant (FC6 + FCa + FCb; head's schedule)"
    )
    scratch: Scratch
    map_images: Annotated[int, Field(strict=True, ge=0)] = Field(
        description="evaluation images given action maps (the first N)"
    )


class Heatmaps(Block):
    """Which evaluation images get a heat map picture, and how it looks."""

    images: Annotated[int, Field(strict=True, ge=0)] | list[Name] = Field(
        description="the first N evaluation images, or a list of image ids"
    )
    top_classes: PositiveInt = Field(description="classes shown per image (highest map mean)")
    colormap: str = Field(description="a matplotlib colormap")
    alpha: Annotated[float, Field(ge=0, le=1)] = Field(description="opacity of the map")

    @field_validator("colormap")
    @classmethod
    def _known_colormap(cls, name: str) -> str:
        import matplotlib

        if name not in matplotlib.colormaps:
            close = difflib.get_close_matches(name, list(matplotlib.colormaps), n=1)
            raise ValueError(
                f"unknown colormap {name!r}" + (f"; did you mean {close[0]!r}?" if close else "")
            )
        return name


class Cluster(Block):
    """Where the per-image and per-shard work of index, sample and action-samples runs."""

    backend: Literal["local", "dask"] = Field(
        description="local: `jobs` processes here; dask: a Dask cluster (joblib's dask backend)"
    )
    scheduler: Annotated[str, Field(pattern=SCHEDULER_PATTERN)] | None = Field(
        description="dask: the scheduler's address (tcp://host:8786); null: a local cluster of "
        "`jobs` worker processes"
    )


class Params(Block):
    """Every parameter of the pipeline (``params.yaml``)."""

    jobs: PositiveInt = Field(description="worker processes of the per-image/per-shard stages")
    cluster: Cluster
    dataset: Dataset
    demo: Demo
    tiling: Tiling
    labeling: Labeling
    sampling: Sampling
    shards: Shards
    nets: dict[Annotated[str, Field(min_length=1)], dict[str, Any]] = Field(
        description="options of each backbone, `nets.<net>.<option>`, checked by the net's "
        "family when it is built (docs/backbones.md lists them)"
    )
    features: Features
    head: Head
    scoring: Scoring
    weak: ImageLevel = Field(description="fit-weak: max over windows and scales")
    cam: ImageLevel = Field(description="fit-cam: one linear layer on the whole image")
    heatmaps: Heatmaps
    action: Action

    @property
    def layout(self) -> Layout:
        """Where the outputs of the configured dataset live."""
        return Layout(self.dataset.name)

    def splits(self, split: str | None) -> list[str]:
        """The splits a stage runs for: `split` when given, else the training then the
        evaluation split."""
        return [split] if split else [self.dataset.train_split, self.dataset.eval_split]

    def net_options(self, net: str) -> dict[str, Any]:
        """The ``nets.<net>`` block of `net` ({} when params have none); the net's family
        checks it when it builds the net."""
        return dict(self.nets.get(net) or {})

    def net_names(self, net: str | None) -> list[str]:
        """The nets a stage runs for: `net` when given, else every net of ``features.nets``."""
        return [net] if net else list(self.features.nets)


def _field_model(model: Any, name: str) -> Any:
    """The Block class of field `name` of `model`, or None when it is not a block."""
    field = model.model_fields.get(name) if isinstance(model, type) else None
    kind = field.annotation if field is not None else None
    return kind if isinstance(kind, type) and issubclass(kind, BaseModel) else None


def _key_path(location: tuple[Any, ...]) -> tuple[Any, ...]:
    """The params key of an error location, without pydantic's union-member tags."""
    model: Any = Params
    path: list[Any] = []
    for part in location:
        if isinstance(part, int):
            path.append(part)
            continue
        if model is None:  # inside a plain value: what follows are union-member tags
            break
        path.append(part)
        if part not in model.model_fields:  # an unknown key of a block
            break
        model = _field_model(model, part)
    return tuple(path)


def _closest_key(path: tuple[Any, ...]) -> str:
    """``; did you mean '<key>'?`` for the unknown key at the end of `path`, or ''."""
    model: Any = Params
    for part in path[:-1]:
        model = _field_model(model, str(part))
        if model is None:
            return ""
    close = difflib.get_close_matches(str(path[-1]), list(model.model_fields), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _one_line(errors: list[dict[str, Any]]) -> str:
    """The key and the rule of the first problem (an unknown key first: it explains the
    missing one beside it); a key that accepts several forms lists each form's rule."""
    errors = sorted(errors, key=lambda e: e["type"] != "extra_forbidden")
    path = _key_path(tuple(errors[0]["loc"]))
    key = ".".join(str(p) for p in path) or "(top level)"
    first = errors[0]
    if first["type"] == "extra_forbidden":
        return f"{key}: unknown parameter{_closest_key(path)}"
    if first["type"] == "missing":
        return f"{key}: parameter is missing"
    same_key = [e for e in errors if _key_path(tuple(e["loc"])) == path]
    rules = dict.fromkeys(str(e["msg"]).removeprefix("Value error, ") for e in same_key)
    given = first.get("input")
    shown = "" if isinstance(given, dict) else f" (got {reprlib.repr(given)})"
    return f"{key}: {' or '.join(rules)}{shown}"


def validate_params(raw: Any, source: str) -> Params:
    """Validate a parsed params mapping against the schema.

    Raises PipelineError with one line: `source` (the file read), the first offending key and
    its rule, and how many other keys have problems.
    """
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        errors = err.errors()
        keys = {_key_path(tuple(e["loc"])) for e in errors}
        more = f" (and {len(keys) - 1} more)" if len(keys) > 1 else ""
        raise PipelineError(f"{source}: {_one_line(errors)}{more}") from None


MAX_YAML_NODES = 100_000  # params.yaml has about 200; aliases may not expand it past this


def _children(node: yaml.Node) -> list[yaml.Node]:
    """The nodes directly inside a YAML node (a mapping's keys and values)."""
    if isinstance(node, yaml.SequenceNode):
        return node.value
    if isinstance(node, yaml.MappingNode):
        return [child for pair in node.value for child in pair]
    return []


class ParamsLoader(yaml.SafeLoader):
    """YAML's safe loader that refuses a key given twice in one mapping (YAML keeps the last
    silently) and aliases that expand the document past `MAX_YAML_NODES` nodes (an alias
    bomb: a few lines that expand to millions of values)."""

    def construct_document(self, node: yaml.Node) -> Any:
        expanded: dict[int, int] = {}

        def size(n: yaml.Node) -> int:
            if id(n) not in expanded:
                expanded[id(n)] = -1  # met again before it is counted: a cycle, too large
                expanded[id(n)] = 1 + sum(size(child) for child in _children(n))
            if not 0 < expanded[id(n)] <= MAX_YAML_NODES:
                raise yaml.constructor.ConstructorError(
                    None, None, f"aliases expand past {MAX_YAML_NODES} values", n.start_mark
                )
            return expanded[id(n)]

        size(node)
        return super().construct_document(node)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} given twice in one mapping", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_params(path: Path) -> Params:
    """Read and validate a YAML parameters file; PipelineError naming `path` when it is
    missing, malformed or breaks a rule of the schema."""
    try:
        raw = yaml.load(path.read_text(), Loader=ParamsLoader)
    except FileNotFoundError:
        raise PipelineError(f"{path}: parameters file is missing") from None
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        message = " ".join(str(err).split())
        raise PipelineError(f"{path}: malformed YAML ({message})") from None
    if not isinstance(raw, dict):
        raise PipelineError(f"{path}: expected a mapping of parameter blocks")
    return validate_params(raw, str(path))
