"""Reading results: a store as a Dataset (``dataset``), its analysis, reports, pictures,
circuits' faithfulness and multirun manifests. Stores are opened through
``sweep.store.read``; nothing here writes one. Imports no torch, TransformerLens or Hydra,
so reading results is quick on any machine."""
