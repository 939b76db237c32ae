"""Framework adapters: ``lshcore.adapters.torch``, ``.tensorflow``, ``.mxnet`` (each imports its framework)."""
