"""The LSH one-shot learning memory (Kaiser et al., 2017) on the lshcore index."""
