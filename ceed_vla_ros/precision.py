"""Device and precision choices of the policy node, eval, bench, collect-trajectories and distill.

``device``: ``auto`` (the first CUDA GPU when torch sees one, else the CPU), ``cpu``, ``cuda`` or
``cuda:N``. Asking for CUDA where torch has none (a CPU build of torch, no driver, or N beyond the
GPUs present) is refused with one :class:`PrecisionError` saying what torch sees; nothing falls
back silently.

``dtype``: ``auto``, ``float32``, ``bfloat16`` or ``float16`` (aliases ``fp32``, ``bf16``,
``fp16``). ``auto`` is float32 on the CPU and bfloat16 on a GPU that supports it (float16
otherwise). On the CPU:

* ``bfloat16`` runs (torch has CPU kernels for every operation our models use), usually no faster
  than float32 on CPUs without AMX/AVX512-BF16, and its argmax can pick another token where two
  logits are within bf16 rounding: see ``ceed-vla bench-precision`` for the measured effect on the
  shipped checkpoints, which is why float32 stays the default on the CPU;
* ``float16`` is refused on the CPU unless ``allow_cpu_float16`` is given: several CPU kernels are
  slow or missing in half precision and it has no use there beyond tests.

Torch is imported lazily so that the arm driver and the camera node (which only validate their
parameters) can import this module without torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

DEVICE_CHOICES = ("auto", "cpu", "cuda", "cuda:N")
DTYPE_CHOICES = ("auto", "float32", "bfloat16", "float16")
DTYPE_ALIASES = {
    "fp32": "float32",
    "float": "float32",
    "bf16": "bfloat16",
    "fp16": "float16",
    "half": "float16",
}


class PrecisionError(ValueError):
    """A device or dtype that cannot be used here (the message says why and what is available)."""


def check_device_name(name: str) -> str:
    """Syntax only (no torch): ``auto``, ``cpu``, ``cuda`` or ``cuda:N``; returns it normalised."""
    text = str(name).strip().lower()
    if text in ("auto", "cpu", "cuda"):
        return text
    if text.startswith("cuda:") and text[5:].isdigit():
        return f"cuda:{int(text[5:])}"
    raise PrecisionError(f"device {name!r}: expected auto, cpu, cuda or cuda:N (N = GPU index)")


def check_dtype_name(name: str) -> str:
    """Syntax only (no torch): one of :data:`DTYPE_CHOICES` (or an alias); returns the canonical name."""
    text = str(name).strip().lower()
    text = DTYPE_ALIASES.get(text, text)
    if text not in DTYPE_CHOICES:
        raise PrecisionError(f"dtype {name!r}: expected one of {', '.join(DTYPE_CHOICES)} (or bf16, fp16, fp32)")
    return text


def parse_device(name: str = "auto"):
    """The ``torch.device`` for ``name``; :class:`PrecisionError` when CUDA is asked for and absent."""
    import torch

    text = check_device_name(name)
    if text == "auto":
        return torch.device("cuda:0") if torch.cuda.is_available() else torch.device("cpu")
    if text == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        build = torch.version.cuda
        why = (
            f"this torch ({torch.__version__}) is a CPU-only build"
            if build is None
            else f"torch {torch.__version__} was built for CUDA {build} but finds no usable GPU (driver, "
            "CUDA_VISIBLE_DEVICES)"
        )
        raise PrecisionError(f"device {name!r} asked for, but {why}; use device cpu (or auto)")
    index = int(text.partition(":")[2] or 0)
    count = torch.cuda.device_count()
    if index >= count:
        raise PrecisionError(f"device {name!r}: only {count} CUDA device(s) visible (cuda:0..cuda:{count - 1})")
    return torch.device(f"cuda:{index}")


def parse_dtype(name: str = "auto", device: Any = None, *, allow_cpu_float16: bool = False):
    """The ``torch.dtype`` for ``name`` on ``device`` (a ``torch.device`` or name; default CPU)."""
    import torch

    text = check_dtype_name(name)
    device = torch.device("cpu") if device is None else torch.device(device)
    if text == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[text]
    if dtype == torch.float16 and device.type == "cpu" and not allow_cpu_float16:
        raise PrecisionError(
            "dtype float16 on the CPU: refused (slow or missing half-precision CPU kernels); use float32 or "
            "bfloat16 on the CPU, float16 on a GPU"
        )
    return dtype


@dataclass(frozen=True)
class Precision:
    """A resolved (device, dtype) pair, with the names it came from (for logs and reports)."""

    device: Any
    dtype: Any
    device_name: str = "auto"
    dtype_name: str = "auto"

    @property
    def label(self) -> str:
        return f"{self.device} {str(self.dtype).removeprefix('torch.')}"

    def autocast(self):
        """A context running matmuls in ``dtype`` (torch autocast; a no-op for float32)."""
        import contextlib

        import torch

        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)


def resolve_precision(device: str = "auto", dtype: str = "auto", *, allow_cpu_float16: bool = False) -> Precision:
    """Parse both names (see :func:`parse_device`, :func:`parse_dtype`)."""
    resolved = parse_device(device)
    return Precision(
        resolved, parse_dtype(dtype, resolved, allow_cpu_float16=allow_cpu_float16), str(device), str(dtype)
    )


def add_precision_arguments(parser, *, default_device: str = "auto", default_dtype: str = "auto") -> None:
    """``--device`` and ``--dtype`` on a command line (see the module docstring)."""
    parser.add_argument(
        "--device",
        default=default_device,
        help="auto (first GPU if torch sees one, else cpu), cpu, cuda or cuda:N (default %(default)s)",
    )
    parser.add_argument(
        "--dtype",
        default=default_dtype,
        help="auto (float32 on cpu, bfloat16 on a GPU), float32, bfloat16 or float16 (GPU only) (default %(default)s)",
    )


def precision_from_args(args, *, allow_cpu_float16: bool = False) -> Precision:
    """:func:`resolve_precision` of parsed ``--device`` / ``--dtype``; SystemExit with the reason if refused."""
    try:
        return resolve_precision(args.device, args.dtype, allow_cpu_float16=allow_cpu_float16)
    except PrecisionError as error:
        raise SystemExit(f"error: {error}") from None


def float32_output_head(model) -> bool:
    """Run the output projection (``get_output_embeddings``) in float32 on a bf16 / fp16 model.

    bf16 logits carry 8 significant bits: logits near 4 are multiples of 1/32, so two action
    tokens often tie exactly and the argmax then depends on rounding. With the head in float32
    (its input up-cast, its weights kept in float32: 2x the head's memory, e.g. +0.26 GB for a
    32k x 4096 head) the logits are exact to float32 given the final hidden state. Returns
    whether a head was changed (False for float32 models or models without one)."""
    import torch

    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is None or head.weight.dtype == torch.float32:
        return False
    head.float()

    def upcast(_module, args):
        return tuple(a.float() if torch.is_tensor(a) and a.is_floating_point() else a for a in args)

    head.register_forward_pre_hook(upcast)
    return True


def synchronize(device) -> None:
    """Wait for queued GPU work (timings); nothing on the CPU."""
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
