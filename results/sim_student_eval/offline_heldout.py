"""Open-loop held-out comparison on the teacher's validation episodes (last 20 of each file).

Run from the repo root: `PYTHONPATH=. HF_HUB_OFFLINE=1 .venv/bin/python results/sim_student_eval/offline_heldout.py`
(writes offline_heldout.json next to this file)."""
import json, time, torch, numpy as np
torch.set_num_threads(1)
from ceed_vla_ros.checkpoint import load_checkpoint
from ceed_vla_ros.decoding import TokenRange
from ceed_vla_ros.distill import trajectories as T, train_student as S
from ceed_vla_ros.sim.recorder import DatasetReader
files = ["data/reach_3000.h5", "data/push_1500.h5"]
teacher = load_checkpoint("models", "sim_teacher"); student = load_checkpoint("models", "sim_student")
refs = [[], [], []]
for f, path in enumerate(files):
    with DatasetReader(path) as r:
        for e in range(len(r) - 20, len(r)):
            for s in range(r[e].num_steps):
                refs[0].append(f); refs[1].append(e); refs[2].append(s)
refs = tuple(np.array(x) for x in refs)
samples = T.load_samples(files, teacher, refs=refs)
traj = T.collect(teacher, samples, batch_size=128, seed=0, progress=False)
allowed = TokenRange(*teacher.action_tokenizer.token_range)
out = {"samples": len(samples), "episodes": "last 20 episodes of each of " + ", ".join(files) + " (held out from teacher training and distillation)"}
for name, ck in (("teacher", teacher), ("student", student)):
    for f in (0, 1):
        rows = np.flatnonzero(samples.file_index == f)
        res = S.evaluate_early_exit(ck.model, samples, traj, rows, teacher.metadata.image, allowed, teacher.metadata.n_bins)
        out[f"{name}|{['reach','push'][f]}"] = {k: round(v, 4) for k, v in res.items()}
    res = S.evaluate_early_exit(ck.model, samples, traj, np.arange(len(samples)), teacher.metadata.image, allowed, teacher.metadata.n_bins)
    out[f"{name}|all"] = {k: round(v, 4) for k, v in res.items()}
print(json.dumps(out, indent=1))
json.dump(out, open("results/sim_student_eval/offline_heldout.json", "w"), indent=1)
