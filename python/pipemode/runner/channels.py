"""A training job's input channels: parsed from the API's InputDataConfig or from NAME=SOURCE.

The CreateTrainingJob API and the container's `inputdataconfig.json` name the same settings
differently (`InputMode` vs `TrainingInputMode`, `S3DataDistributionType` vs
`S3DistributionType`); `Channel` holds them once and writes each form.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pipemode.errors import JobConfigError

__all__ = ["Channel", "parse_channel_arg", "validate_name"]


# SageMaker's own patterns; a name that passes them is also safe as a path component.
_CHANNEL_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
_JOB_NAME = re.compile(r"[A-Za-z0-9](-*[A-Za-z0-9]){0,62}")

_INPUT_MODES = {"pipe": "Pipe", "file": "File", "fastfile": "File"}
_DATA_TYPES = {
    "s3prefix": "S3Prefix",
    "manifestfile": "ManifestFile",
    "augmentedmanifestfile": "AugmentedManifestFile",
}
# CreateTrainingJob's limit on AttributeNames.
MAX_ATTRIBUTE_NAMES = 16
_DISTRIBUTIONS = {"fullyreplicated": "FullyReplicated", "shardedbys3key": "ShardedByS3Key"}
_WRAPPINGS = {"none": "None", "recordio": "RecordIO"}
_COMPRESSIONS = {"none": "None", "gzip": "Gzip"}


def validate_name(kind: str, name: str) -> str:
    """Returns `name` if it is a valid channel or job name, else raises JobConfigError."""
    pattern = _CHANNEL_NAME if kind == "channel" else _JOB_NAME
    if not pattern.fullmatch(name) or ".." in name or name == ".":
        raise JobConfigError(
            f"invalid {kind} name {name!r}: use letters, digits"
            + (", '.', '_' and '-' (no '..'), at most 64" if kind == "channel" else " and '-'")
            + " characters"
        )
    return name


def _choice(option: str, value: str, choices: dict[str, str]) -> str:
    try:
        return choices[str(value).lower()]
    except KeyError:
        allowed = ", ".join(sorted(set(choices.values())))
        raise JobConfigError(f"{option} must be one of {allowed}, not {value!r}") from None


@dataclass(frozen=True)
class Channel:
    """One input channel of a training job. Option values are spelled as the API spells them."""

    name: str
    source: str
    input_mode: str = "Pipe"
    s3_data_type: str = "S3Prefix"
    distribution: str = "FullyReplicated"
    record_wrapping: str = "None"
    compression: str = "None"
    shuffle_seed: int | None = None
    content_type: str | None = None
    # AugmentedManifestFile only: the attributes streamed for each line, in this order.
    attribute_names: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        validate_name("channel", self.name)
        normalise = {
            "input_mode": ("InputMode", _INPUT_MODES),
            "s3_data_type": ("S3DataType", _DATA_TYPES),
            "distribution": ("S3DataDistributionType", _DISTRIBUTIONS),
            "record_wrapping": ("RecordWrapperType", _WRAPPINGS),
            "compression": ("CompressionType", _COMPRESSIONS),
        }
        # Spelled as the API spells them, whatever the case they were given in.
        for field, (option, choices) in normalise.items():
            value = _choice(f"channel {self.name!r}: {option}", getattr(self, field), choices)
            object.__setattr__(self, field, value)
        if not self.source:
            raise JobConfigError(f"channel {self.name!r} has no source")
        if self.shuffle_seed is not None:
            object.__setattr__(self, "shuffle_seed", int(self.shuffle_seed))
        if self.input_mode == "File" and self.compression != "None":
            raise JobConfigError(
                f"channel {self.name!r}: CompressionType=Gzip is supported in Pipe mode only"
            )
        if self.input_mode == "File" and self.record_wrapping != "None":
            raise JobConfigError(
                f"channel {self.name!r}: RecordWrapperType=RecordIO is supported in Pipe mode only"
            )
        self._check_attribute_names()

    def _check_attribute_names(self) -> None:
        names = self.attribute_names
        if self.s3_data_type != "AugmentedManifestFile":
            if names is not None:
                raise JobConfigError(
                    f"channel {self.name!r}: AttributeNames needs S3DataType=AugmentedManifestFile"
                )
            return
        # As SageMaker: an augmented manifest is streamed, attribute by attribute, in Pipe mode.
        if self.input_mode != "Pipe":
            raise JobConfigError(
                f"channel {self.name!r}: S3DataType=AugmentedManifestFile is supported in Pipe "
                "mode only"
            )
        if self.compression != "None":
            raise JobConfigError(
                f"channel {self.name!r}: CompressionType=Gzip does not apply to an augmented "
                "manifest"
            )
        names = tuple(names) if isinstance(names, (list, tuple)) else ()
        if not 1 <= len(names) <= MAX_ATTRIBUTE_NAMES or not all(
            isinstance(name, str) and name for name in names
        ):
            raise JobConfigError(
                f"channel {self.name!r}: S3DataType=AugmentedManifestFile needs AttributeNames, "
                f"1 to {MAX_ATTRIBUTE_NAMES} non-empty strings, not {self.attribute_names!r}"
            )
        object.__setattr__(self, "attribute_names", names)

    @property
    def is_pipe(self) -> bool:
        return self.input_mode == "Pipe"

    @classmethod
    def from_api(cls, entry: dict[str, Any], default_input_mode: str = "Pipe") -> Channel:
        """Reads one Channel object of the CreateTrainingJob API's InputDataConfig."""
        try:
            name = entry["ChannelName"]
            s3 = entry["DataSource"]["S3DataSource"]
            uri = s3["S3Uri"]
        except (KeyError, TypeError) as missing:
            raise JobConfigError(
                f"InputDataConfig entry {entry!r} lacks {missing}: each channel needs "
                "ChannelName and DataSource.S3DataSource.S3Uri"
            ) from None
        seed = (entry.get("ShuffleConfig") or {}).get("Seed")
        return cls.with_options(
            name,
            uri,
            input_mode=entry.get("InputMode", default_input_mode),
            s3_data_type=s3.get("S3DataType"),
            distribution=s3.get("S3DataDistributionType"),
            record_wrapping=entry.get("RecordWrapperType"),
            compression=entry.get("CompressionType"),
            shuffle_seed=seed,
            content_type=entry.get("ContentType"),
            attribute_names=s3.get("AttributeNames"),
        )

    @classmethod
    def with_options(cls, name: str, source: str, **options: Any) -> Channel:
        """A channel with the options given; an option that is None keeps its default."""
        return cls(name, source, **{k: v for k, v in options.items() if v is not None})

    def container_config(self) -> dict[str, str]:
        """This channel's entry in the container's `inputdataconfig.json`."""
        config = {
            "TrainingInputMode": self.input_mode,
            "S3DistributionType": self.distribution,
            "RecordWrapperType": self.record_wrapping,
        }
        if self.content_type:
            config["ContentType"] = self.content_type
        return config


def parse_channel_arg(text: str, input_mode: str = "Pipe") -> Channel:
    """Parses the command line's `NAME=SOURCE`."""
    name, sep, source = text.partition("=")
    if not sep:
        raise JobConfigError(f"--channel takes NAME=SOURCE, not {text!r}")
    return Channel(name=name, source=source, input_mode=input_mode)


def parse_input_data_config(config: Any, default_input_mode: str = "Pipe") -> list[Channel]:
    """Reads an InputDataConfig list, or a whole CreateTrainingJob request holding one."""
    if isinstance(config, dict) and "InputDataConfig" in config:
        config = config["InputDataConfig"]
    if not isinstance(config, list):
        raise JobConfigError("InputDataConfig must be a JSON list of Channel objects")
    return [Channel.from_api(entry, default_input_mode) for entry in config]
