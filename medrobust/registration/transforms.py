"""Training-time transforms for label-driven registration.

``RandLabelChanneld`` keeps one randomly chosen label channel, the same index for moving and
fixed labels (label-reg's "one label per pair per step"), so pairs with different numbers of
landmarks can be batched. It owns its random state (MONAI ``Randomizable``), so
``set_random_state(seed)`` or the loader's seeding makes it reproducible without global seeds.

Example:
    >>> import torch
    >>> t = RandLabelChanneld(("moving_label", "fixed_label")).set_random_state(0)
    >>> d = {"moving_label": torch.rand(5, 8, 8, 8), "fixed_label": torch.rand(5, 8, 8, 8)}
    >>> t(d)["moving_label"].shape
    torch.Size([1, 8, 8, 8])
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import torch
from monai.transforms import MapTransform, Randomizable

__all__ = ["RandLabelChanneld"]


class RandLabelChanneld(Randomizable, MapTransform):
    """Select one random channel of every ``keys`` entry (same channel for all keys).

    Args:
        keys: label keys, all with the same number of channels ``C``: ``(C, *spatial)`` -> ``(1, *spatial)``.
        gland_prob: probability of picking channel 0 (e.g. the gland); ``None`` = uniform over channels.
        channel_key: where the chosen index is stored in the output (for logging/evaluation).
    """

    def __init__(self, keys: Sequence[Hashable], *, gland_prob: float | None = None, channel_key: str = "label_channel") -> None:
        MapTransform.__init__(self, keys)
        if gland_prob is not None and not 0.0 <= gland_prob <= 1.0:
            raise ValueError(f"gland_prob must be in [0, 1] or None, got {gland_prob}.")
        self.gland_prob = gland_prob
        self.channel_key = channel_key
        self._channel = 0

    def randomize(self, n_channels: int) -> None:
        if self.gland_prob is None or n_channels == 1:
            self._channel = int(self.R.randint(n_channels))
        elif self.R.rand() < self.gland_prob:
            self._channel = 0
        else:
            self._channel = 1 + int(self.R.randint(n_channels - 1))

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        counts = {int(d[k].shape[0]) for k in self.key_iterator(d)}
        if len(counts) != 1:
            raise ValueError(f"keys {list(self.keys)} must have the same number of channels, got {sorted(counts)}.")
        self.randomize(counts.pop())
        for k in self.key_iterator(d):
            d[k] = d[k][self._channel : self._channel + 1]
        d[self.channel_key] = torch.tensor(self._channel)
        return d
