"""Training workflows that are more than one ``iteration_update``: engines that own data streams,
checkpoints and several trainer runs.

- :mod:`.streaming`: sequential self-supervised training on chunked, on-disk data streams with
  replay and MAS, resumable after a kill (Hu et al., ICLR 2022).
"""

from medrobust.training.streaming import ReplayBuffer, StreamingTrainer, augment, mas_importance, read_chunk, write_chunks

__all__ = ["StreamingTrainer", "ReplayBuffer", "write_chunks", "read_chunk", "augment", "mas_importance"]
