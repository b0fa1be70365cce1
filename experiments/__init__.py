"""Experiment configs: ml_collections ``get_config()`` modules for ``jalign train --config NAME``.

Installed as the package ``jalign.experiments`` (package data of the wheel), so a config is found by its name
(``jalign train --config dpo_tiny``) from any directory; in a checkout the path ``experiments/NAME.py`` works too.
"""
