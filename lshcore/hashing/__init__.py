"""Hash families and MIPS transforms.

``base`` (the ``HashFamily`` and ``Transform`` types), ``projection`` (srp, sparse_srp,
crosspolytope, pstable), ``wta`` (wta, dwta), ``minhash``, ``mips`` (simple_lsh,
sign_alsh). Look them up by name with ``lshcore.hash_family`` / ``lshcore.transform``.
This ``__init__`` imports nothing, so importing the base type stays cheap.
"""
