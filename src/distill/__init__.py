"""Helper package of the book *Dataset distillation with implicit differentiation*.

Layers, each importing only those above it:

- :mod:`distill.checks`: input checks with messages that name the argument;
  :mod:`distill.atomic`: the one way files are written (all or nothing)
- :mod:`distill.config`: ``DistillConfig`` and the named ``PRESETS`` (no JAX)
- :mod:`distill.data`: datasets as flat float arrays (TFDS, offline files, cache)
- :mod:`distill.sharding`: the devices as a mesh, the real data split over them
- :mod:`distill.model`: the inner model (logistic regression) and its solvers;
  :mod:`distill.convnet`: the benchmarks' ConvNet (plain JAX)
- :mod:`distill.outer`: outer solvers, objects with ``init`` and ``step``
- :mod:`distill.distillation`: the outer objective and the distillation loop
- :mod:`distill.evaluate`: test accuracy, random real baselines (kept on disk
  by :mod:`distill.cache`)
- :mod:`distill.network_distillation`: distilling for a network (the inner
  problem on a ConvNet's features, a pool of networks, the loop)
- :mod:`distill.augment` and :mod:`distill.protocol`: the field's evaluation
  protocol, a ConvNet trained from scratch on a set (DC's augmentation)
- :mod:`distill.transfer`: an MLP trained on a set
- :mod:`distill.plotting`: figures; :mod:`distill.profiling`: compile and run
  time, working memory
- :mod:`distill.io`: the distilled set on disk; :mod:`distill.cli`: the command line
"""

__version__ = "0.1.0"
