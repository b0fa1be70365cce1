"""jalign: a JAX research framework for the theory of language-model alignment.

Layers, lowest first (a module imports only its own layer or lower ones; ``jalign.layering`` checks it,
docs/architecture.md draws it):

* base: ``divergences``, ``data``, ``tokenizers``, ``rewards``, ``reporting``, ``plotting``, ``runtime``;
* math and models: ``losses``, ``models``;
* theory: ``logic``, ``fdpg``, ``diagnostics``, ``envs``;
* the trainer: ``train`` (core, then ``train.plugins`` and ``train.probes``, then the loop);
* ``studies`` (research trainers), then ``cli``; ``paper_repro`` and ``experiments`` sit on top.
"""

__version__ = "0.1.0"
