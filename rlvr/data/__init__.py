"""RLVR data: the row schema, loaders, procedural verifiable tasks (`procedural.py`) and the n-gram contamination
report (`contamination.py`).

Kept import-light: importing `rlvr.data` loads no torch, datasets or tokenizers; import the submodule you need.
"""
