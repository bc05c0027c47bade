"""The run folder of a resumable training command (``train``, ``distill``): where the accelerate
state and the trainer's own progress live, and how ``--resume`` reads them back.

``<run-dir>/state/`` holds ``accelerator.save_state`` (model weights as safetensors; optimizer,
scheduler and RNG as torch files: run folders only, never a shipped checkpoint);
``<run-dir>/trainer_state.json`` holds at least ``step`` and ``train_seconds``.
"""

from __future__ import annotations

import json
from pathlib import Path

STATE_DIR = "state"
TRAINER_STATE = "trainer_state.json"


def resume_run(accelerator, run_dir: Path) -> dict:
    """Load the accelerate state saved in ``run_dir`` and return ``trainer_state.json``.

    Raises:
        SystemExit: nothing was saved there yet.
    """
    state_file = Path(run_dir) / TRAINER_STATE
    if not state_file.is_file():
        raise SystemExit(f"--resume: no saved state in {run_dir}")
    accelerator.load_state(str(Path(run_dir) / STATE_DIR))
    saved = json.loads(state_file.read_text())
    accelerator.print(f"resumed at step {int(saved['step'])}")
    return saved
