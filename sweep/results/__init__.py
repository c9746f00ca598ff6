"""The results side: the store, its analysis, pictures and status. Imports no torch,
TransformerLens or Hydra, so reading results is quick on any machine."""
