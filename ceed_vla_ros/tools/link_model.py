"""A lossy, delayed network link, as a deterministic model (no ROS): what the link relay applies.

Each message gets a fate from :meth:`LinkModel.fate`: dropped (None) or delivered after
``delay_s + U(0, jitter_s)`` seconds; draws come from one seeded generator, so a run with the same
seed and message sequence loses and delays the same messages. A drop probability of 1 is an outage.
Jitter larger than the send period reorders messages, as a real link may.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class LinkModel:
    drop_probability: float = 0.0
    delay_s: float = 0.0
    jitter_s: float = 0.0
    seed: int = 0
    _rng: np.random.Generator = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.configure(self.drop_probability, self.delay_s, self.jitter_s)
        self._rng = np.random.default_rng(self.seed)

    def configure(self, drop_probability: float, delay_s: float, jitter_s: float) -> None:
        """Change the link's behaviour from the next message on (values checked)."""
        if not 0.0 <= drop_probability <= 1.0:
            raise ValueError(f"drop probability must be in [0, 1], got {drop_probability}")
        if delay_s < 0 or jitter_s < 0:
            raise ValueError(f"delay and jitter must be >= 0 s, got {delay_s}, {jitter_s}")
        self.drop_probability, self.delay_s, self.jitter_s = drop_probability, delay_s, jitter_s

    def fate(self) -> float | None:
        """None: this message is lost; else its delivery delay in seconds."""
        lost, jitter = self._rng.random(2)  # two draws per message whatever the settings: stable streams
        if lost < self.drop_probability:
            return None
        return self.delay_s + jitter * self.jitter_s
