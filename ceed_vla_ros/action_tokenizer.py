"""Action tokens in the OpenVLA convention, parameterised by checkpoint metadata.

Mapping (exact):

* Normalisation (per action dimension ``d``, only where ``mask[d]`` is true)::

      a = clip(2 * (x - q01) / (q99 - q01) - 1, -1, 1)
      x = (a + 1) / 2 * (q99 - q01) + q01            # inverse

  Dimensions with ``mask[d] == False`` (e.g. a gripper already in [-1, 1]) are not rescaled, only
  clipped to [-1, 1].
* Discretisation: ``n_bins`` uniform bins of width ``2 / n_bins`` over [-1, 1]::

      bin    = clip(floor((a + 1) / 2 * n_bins), 0, n_bins - 1)
      centre = -1 + (bin + 0.5) * 2 / n_bins

* Token ids: the action tokens are the LAST ``n_bins`` ids of the LM vocabulary and, as in OpenVLA,
  the id decreases as the action value grows::

      token_id = vocab_size - 1 - bin          # bin 0 (a = -1) -> vocab_size - 1
      bin      = vocab_size - 1 - token_id     # bin n_bins - 1 (a = +1) -> vocab_size - n_bins

  (OpenVLA itself uses ``np.digitize`` against 256 edges, i.e. 255 usable centres; here all
  ``n_bins`` bins have a centre, so the round-trip error is at most half a bin, ``1 / n_bins``.)

  That is scheme ``ceed`` (our own checkpoints). Scheme ``openvla`` is OpenVLA's mapping exactly
  (``prismatic/vla/action_tokenizer.py``), for checkpoints of the ``openvla`` backend, with
  ``vocab_size`` = OpenVLA's id base (the text vocabulary minus its padding, 32000 for Llama 2)::

      edges  = linspace(-1, 1, n_bins)                    # n_bins edges, n_bins - 1 intervals
      d      = digitize(clip(a, -1, 1), edges)            # 1 .. n_bins
      token_id = vocab_size - d                           # ids vocab_size - n_bins .. vocab_size - 1
      index  = clip(vocab_size - token_id - 1, 0, n_bins - 2)
      centre = (edges[index] + edges[index + 1]) / 2      # n_bins - 1 centres

A chunk of ``chunk_len`` actions of ``action_dims`` dims is ``chunk_len * action_dims`` tokens in
row-major order (action 0 dims 0..d-1, then action 1, ...).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ACTION_TOKEN_SCHEMES = ("ceed", "openvla")
ACTION_TOKEN_MAPPINGS = {
    "ceed": "token_id = vocab_size - 1 - bin, bin = clip(floor((a + 1) / 2 * n_bins), 0, n_bins - 1)",
    "openvla": "token_id = vocab_size - digitize(a, linspace(-1, 1, n_bins)); "
    "centre index = clip(vocab_size - token_id - 1, 0, n_bins - 2)",
}


@dataclass(frozen=True)
class NormStats:
    """Per-dimension q01/q99 statistics and the mask of dimensions that are normalised."""

    q01: tuple[float, ...]
    q99: tuple[float, ...]
    mask: tuple[bool, ...]

    def __post_init__(self) -> None:
        if not (len(self.q01) == len(self.q99) == len(self.mask)):
            raise ValueError(
                f"q01, q99 and mask must have the same length, got {len(self.q01)}, {len(self.q99)}, {len(self.mask)}"
            )
        for d, (lo, hi, m) in enumerate(zip(self.q01, self.q99, self.mask)):
            if not (np.isfinite(lo) and np.isfinite(hi)):
                raise ValueError(f"dimension {d}: q01/q99 must be finite, got {lo}, {hi}")
            if m and not hi > lo:
                raise ValueError(f"dimension {d}: q99 ({hi}) must be greater than q01 ({lo})")

    @property
    def dims(self) -> int:
        return len(self.q01)

    @classmethod
    def from_data(cls, data: np.ndarray, mask: tuple[bool, ...] | None = None) -> NormStats:
        """Statistics of ``data`` (N x dims); a masked-in dimension with no spread gets a unit range."""
        data = np.asarray(data, dtype=np.float64).reshape(-1, np.shape(data)[-1])
        q01 = np.quantile(data, 0.01, axis=0)
        q99 = np.quantile(data, 0.99, axis=0)
        flat = q99 <= q01
        q01 = np.where(flat, q01 - 0.5, q01)
        q99 = np.where(flat, q99 + 0.5, q99)
        mask = tuple(True for _ in range(data.shape[1])) if mask is None else tuple(bool(m) for m in mask)
        return cls(tuple(float(v) for v in q01), tuple(float(v) for v in q99), mask)

    def normalize(self, x: np.ndarray, clip: bool = True) -> np.ndarray:
        """Map raw values (..., dims) to [-1, 1] (masked dims rescaled, all dims clipped if ``clip``)."""
        x = np.asarray(x, dtype=np.float64)
        if x.shape[-1] != self.dims:
            raise ValueError(f"expected last dimension {self.dims}, got shape {x.shape}")
        lo, hi, mask = np.asarray(self.q01), np.asarray(self.q99), np.asarray(self.mask)
        span = np.where(mask, hi - lo, 1.0)
        out = np.where(mask, 2.0 * (x - lo) / span - 1.0, x)
        return np.clip(out, -1.0, 1.0) if clip else out

    def unnormalize(self, a: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`normalize` for values in [-1, 1]."""
        a = np.asarray(a, dtype=np.float64)
        if a.shape[-1] != self.dims:
            raise ValueError(f"expected last dimension {self.dims}, got shape {a.shape}")
        lo, hi, mask = np.asarray(self.q01), np.asarray(self.q99), np.asarray(self.mask)
        return np.where(mask, (a + 1.0) / 2.0 * (hi - lo) + lo, a)

    def to_dict(self) -> dict[str, list]:
        return {"q01": list(self.q01), "q99": list(self.q99), "mask": list(self.mask)}

    @classmethod
    def from_dict(cls, data: dict) -> NormStats:
        return cls(
            tuple(float(v) for v in data["q01"]),
            tuple(float(v) for v in data["q99"]),
            tuple(bool(v) for v in data["mask"]),
        )


class ActionTokenizer:
    """Vectorised conversion between action chunks (chunk_len x action_dims) and action token ids.

    Args:
        vocab_size: size of the LM vocabulary; action tokens are its last ``n_bins`` ids.
        n_bins: number of uniform bins over [-1, 1].
        stats: normalisation statistics of the action dimensions.
        chunk_len: actions per chunk.
    """

    def __init__(
        self, vocab_size: int, n_bins: int, stats: NormStats, chunk_len: int, scheme: str = "ceed"
    ) -> None:
        if scheme not in ACTION_TOKEN_SCHEMES:
            raise ValueError(f"action token scheme must be one of {ACTION_TOKEN_SCHEMES}, got {scheme!r}")
        if n_bins < 2:
            raise ValueError(f"n_bins must be >= 2, got {n_bins}")
        if vocab_size < n_bins:
            raise ValueError(f"vocab_size ({vocab_size}) must be >= n_bins ({n_bins})")
        if chunk_len < 1:
            raise ValueError(f"chunk_len must be >= 1, got {chunk_len}")
        self.vocab_size = vocab_size
        self.n_bins = n_bins
        self.stats = stats
        self.action_dims = stats.dims
        self.chunk_len = chunk_len
        self.scheme = scheme
        self._edges = np.linspace(-1.0, 1.0, n_bins)

    @property
    def first_token_id(self) -> int:
        """Smallest action token id (``vocab_size - n_bins``)."""
        return self.vocab_size - self.n_bins

    @property
    def token_range(self) -> tuple[int, int]:
        """Half-open id range ``[start, stop)`` of the action tokens."""
        return self.vocab_size - self.n_bins, self.vocab_size

    @property
    def block_len(self) -> int:
        """Number of tokens in one chunk."""
        return self.chunk_len * self.action_dims

    def bins_to_tokens(self, bins: np.ndarray) -> np.ndarray:
        """Token ids of bins (``ceed``: bin 0..n_bins-1; ``openvla``: digitize index 1..n_bins)."""
        if self.scheme == "openvla":
            return self.vocab_size - np.asarray(bins, dtype=np.int64)
        return self.vocab_size - 1 - np.asarray(bins, dtype=np.int64)

    def tokens_to_bins(self, tokens: np.ndarray) -> np.ndarray:
        tokens = np.asarray(tokens, dtype=np.int64)
        bad = (tokens < self.first_token_id) | (tokens >= self.vocab_size)
        if bad.any():
            index = int(np.flatnonzero(bad.reshape(-1))[0])
            raise ValueError(
                f"token {int(tokens.reshape(-1)[index])} at position {index} is not an action token "
                f"(action ids are {self.first_token_id}..{self.vocab_size - 1})"
            )
        if self.scheme == "openvla":
            return np.clip(self.vocab_size - tokens - 1, 0, self.n_bins - 2)
        return self.vocab_size - 1 - tokens

    def discretize(self, normalized: np.ndarray) -> np.ndarray:
        """Bins of normalised values (clipped to [-1, 1] first)."""
        a = np.clip(np.asarray(normalized, dtype=np.float64), -1.0, 1.0)
        if self.scheme == "openvla":
            return np.digitize(a, self._edges).astype(np.int64)
        return np.clip(np.floor((a + 1.0) / 2.0 * self.n_bins), 0, self.n_bins - 1).astype(np.int64)

    def bin_centers(self, bins: np.ndarray) -> np.ndarray:
        """Centres of :meth:`tokens_to_bins` values."""
        if self.scheme == "openvla":
            index = np.asarray(bins, dtype=np.int64)
            return (self._edges[index] + self._edges[index + 1]) / 2.0
        return -1.0 + (np.asarray(bins, dtype=np.float64) + 0.5) * (2.0 / self.n_bins)

    def encode(self, actions: np.ndarray) -> np.ndarray:
        """Raw action chunk (chunk_len x action_dims) -> flat token ids (chunk_len * action_dims,).

        A stack of chunks (..., chunk_len, action_dims) gives (..., chunk_len * action_dims).
        """
        actions = np.asarray(actions, dtype=np.float64)
        if actions.shape[-2:] != (self.chunk_len, self.action_dims):
            expected = (self.chunk_len, self.action_dims)
            raise ValueError(f"expected an action chunk of shape {expected}, got {actions.shape}")
        if not np.isfinite(actions).all():
            raise ValueError("action chunk contains non-finite values")
        tokens = self.bins_to_tokens(self.discretize(self.stats.normalize(actions)))
        return tokens.reshape(*actions.shape[:-2], self.block_len)

    def normalized_actions(self, tokens: np.ndarray) -> np.ndarray:
        """Token ids (..., chunk_len * action_dims) -> the bins' centres as NORMALISED actions
        (..., chunk_len, action_dims) in [-1, 1] (:meth:`decode` before unnormalising).

        Raises:
            ValueError: wrong token count or any id outside the action-token range.
        """
        tokens = np.asarray(tokens, dtype=np.int64)
        if tokens.ndim == 0 or tokens.shape[-1] != self.block_len:
            raise ValueError(
                f"expected {self.block_len} action tokens ({self.chunk_len} x {self.action_dims}), "
                f"got shape {tokens.shape}"
            )
        centres = self.bin_centers(self.tokens_to_bins(tokens))
        return centres.reshape(*tokens.shape[:-1], self.chunk_len, self.action_dims)

    def decode(self, tokens: np.ndarray | list[int]) -> np.ndarray:
        """Flat token ids (chunk_len * action_dims,) -> raw action chunk (chunk_len x action_dims).

        Raises:
            ValueError: wrong token count or any id outside the action-token range.
        """
        tokens = np.asarray(tokens, dtype=np.int64).reshape(-1)
        if tokens.size != self.block_len:
            raise ValueError(
                f"expected {self.block_len} action tokens ({self.chunk_len} x {self.action_dims}), got {tokens.size}"
            )
        normalized = self.bin_centers(self.tokens_to_bins(tokens)).reshape(self.chunk_len, self.action_dims)
        return self.stats.unnormalize(normalized)
