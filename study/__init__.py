"""The study `mobileattn run` walks, on top of the model, export and benchmark layers: the
embedded image-to-video task, teachers and their training, held-out evaluation, block-wise
distillation, the search, the per-machine cache, the report and its plots, and the driver.

Nothing below this layer imports it (tests/test_import_graph.py)."""
