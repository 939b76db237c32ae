"""Hashed sparse training on lshcore's own kernels.

``schedule`` (rehash/rebuild schedules) <- ``selector`` (LSH active-set selection,
shared with the framework adapters) <- ``optim`` <- ``layer`` (hashed and dense layers)
<- ``model`` (an MLP of layers, save/load) <- ``engine`` (``Trainer``: batches, Hogwild
workers, evaluation).
"""
