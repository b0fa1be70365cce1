"""jalign: a JAX research framework for the theory of language-model alignment.

Layers (each depends only on the ones above it):

* ``jalign.losses``, ``jalign.divergences``, ``jalign.logic``, ``jalign.diagnostics`` — pure math on arrays
  (jax / numpy only).
* ``jalign.envs`` (exactly solvable toys), ``jalign.models``, ``jalign.data``, ``jalign.train`` — build on the math.
* ``paper_repro`` and ``jalign.cli`` — reproductions and the command line; no math of their own.
"""

__version__ = "0.1.0"
