"""Preference data: schemas and validation, readers, TFDS builders, grain pipelines, built-in data sets."""
