"""mobileattn: the command line and the study that walks kernels -> zoo -> model -> export."""

__version__ = "0.1.0"
