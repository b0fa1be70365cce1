"""Preference data: schemas and validation, readers, TFDS builders, grain pipelines, built-in data sets.

Layers: ``schema`` (canonical records, validator) <- ``readers`` (local files in the layouts people have)
<- ``tfds_builders`` (array_record/parquet via TFDS, no TensorFlow) and ``pipeline`` (grain: tokenise,
truncate, pad, shuffle, shard, resume); ``builtin`` generates small offline data sets; ``summary`` backs
``jalign data inspect``. See docs/data.md.
"""

from jalign.data.readers import FORMATS, detect_format, listwise_to_pairwise, read, read_with_lines
from jalign.data.schema import KINDS, InvalidDataError, RecordError, ValidationReport, validate_record

__all__ = [
    "FORMATS",
    "KINDS",
    "InvalidDataError",
    "RecordError",
    "ValidationReport",
    "detect_format",
    "listwise_to_pairwise",
    "read",
    "read_with_lines",
    "validate_record",
]
