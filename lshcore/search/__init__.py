"""Bucketed hash tables (``tables``: ``LSHTables``) and the vector index built on them
(``index``: ``LSHIndex``, ``IndexParams``)."""
