"""The foundation every other part imports: input validation, the file container and
the ``Backend`` type. Nothing here imports anything above it (registry, hashing, ...)."""
