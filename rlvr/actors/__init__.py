"""Ray-side pieces of the RLVR stage: plain classes (`Generator`, `Learner`) that the Ray layer in `group`
places as actors. Importing this package imports neither torch nor Ray."""
