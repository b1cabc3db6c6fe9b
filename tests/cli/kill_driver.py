"""SIGKILL at random moments of a training run, then resume: run by tests/cli/test_signals.py in a
process of its own.

``python kill_driver.py ITERATIONS SEED FOLDER`` trains a tiny SAE once without interruption, then
ITERATIONS times: forks a child that trains the same SAE (resuming whatever checkpoint the earlier
kills left), kills it with SIGKILL after a random delay, resumes to the end in-process and compares
the weights with the uninterrupted run. Prints one
JSON line: how many kills landed before the end, how many checkpoints were resumed, and the
iterations that differed. Forking (after torch is imported, on one thread) keeps each iteration to a
fraction of a second."""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from posfeat import train_sae
from posfeat.io.writes import TEMP_TAG
from posfeat.training.loop import CHECKPOINT

from helpers import random_pair

SETTINGS = {
    "d_sae": 8,
    "context": 8,
    "steps": 60,
    "batch": 16,
    "checkpoint_seconds": 0.0,
    "progress": False,
    "log_every": 5,
}


def weights(res) -> dict[str, torch.Tensor]:
    return {n: getattr(res.sae, n).clone() for n in ("W_enc", "W_dec", "b_enc", "b_dec")}


def main() -> None:
    iterations, seed, root = int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
    torch.set_num_threads(1)
    emb, _ = random_pair(d_vocab=40, n_ctx=12, d_model=8)
    ref = weights(train_sae(emb, out=root / "ref", **SETTINGS))
    t0 = time.perf_counter()  # a second, warm run gives the span the kills are spread over
    assert all(
        torch.equal(ref[n], w)
        for n, w in weights(train_sae(emb, out=root / "ref2", **SETTINGS)).items()
    )
    span = time.perf_counter() - t0
    rng = random.Random(seed)
    killed = resumed = 0
    differ: list[int] = []
    for i in range(iterations):
        out = root / f"cut{i}"
        for _ in range(rng.randint(1, 3)):  # one to three kills in a row, each at a random moment
            pid = os.fork()
            if pid == 0:
                try:
                    train_sae(emb, out=out, resume_or_start=True, **SETTINGS)
                finally:
                    os._exit(0)
            time.sleep(rng.uniform(0.0, 1.3 * span))
            os.kill(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
            killed += os.WIFSIGNALED(status)
        if out.exists() and not (out.with_name(out.name + ".partial")).exists():
            got = weights_of(out)
        else:
            resumed += (out.with_name(out.name + ".partial") / CHECKPOINT).is_file()
            got = weights(train_sae(emb, out=out, resume_or_start=True, **SETTINGS))
        if any(not torch.equal(ref[n], got[n]) for n in ref):
            differ.append(i)
    left = [str(p) for p in root.rglob("*") if TEMP_TAG in p.name]
    print(
        json.dumps(
            {
                "span_s": round(span, 3),
                "iterations": iterations,
                "killed": killed,
                "resumed": resumed,
                "differ": differ,
                "temporaries": left,
            }
        )
    )


def weights_of(folder: Path) -> dict[str, torch.Tensor]:
    from posfeat import read_sae_folder

    sae = read_sae_folder(folder)
    return {n: getattr(sae, n) for n in ("W_enc", "W_dec", "b_enc", "b_dec")}


if __name__ == "__main__":
    main()
