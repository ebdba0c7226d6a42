"""Applications on top of the library: the ``deblur`` CLI, demo, benchmarks, evaluation, file I/O and stacks."""
