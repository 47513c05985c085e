"""Run the CLIs on bad and unusual inputs and print the markdown table of docs/benchmarks.md
("Bad and unusual input"): each input, the first line the tool printed, and its exit code.

    .venv/bin/python scripts/bad_input_table.py [--keep DIR]

The inputs are made here with the public codebases' own torch.save layouts (tests/fixtures_prior_art.py)
and an 8x8 digits set exported as a user would (tests/test_distill_inputs_digits.py).
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
BIN = Path(sys.executable).parent


def run(*cmd) -> tuple[int, str]:
    r = subprocess.run([str(BIN / cmd[0]), *map(str, cmd[1:])], capture_output=True, text=True, timeout=600)
    lines = [ln for ln in (r.stderr + r.stdout).splitlines() if ln.strip() and not ln.startswith(("note:", "  "))]
    key = [ln for ln in lines if "error" in ln or "warning" in ln or ln.startswith(("packed", "OK", "BAD", "wrote", "skipped"))]
    return r.returncode, (key or lines or [""])[0]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--keep", help="make the inputs in this folder (default: a temporary one)")
    args = ap.parse_args()
    d = Path(args.keep or tempfile.mkdtemp(prefix="bad-input-"))
    d.mkdir(parents=True, exist_ok=True)
    from fixtures_prior_art import write_hald, write_lpld, write_sre2l
    from test_distill_inputs_digits import export_npz, make_digits

    rows = []

    def case(what: str, *cmd):
        code, said = run(*cmd)
        said = said.replace(str(d) + "/", "").replace("|", "\\|")
        rows.append((what, said[:230] + ("…" if len(said) > 230 else ""), code))

    write_lpld(d / "lpld50", r=0.5, num_images=40, epochs=3, batch_size=8)
    case("LPLD label pool, r = 0.5 (last kept epoch partial)", "labelstore", "pack", d / "lpld50", d / "a.h5", "--image-size", 32, "--force")
    write_lpld(d / "lpld90", r=0.9, num_images=40, epochs=3, batch_size=8)
    case("LPLD label pool, r = 0.9 (one batch of one epoch)", "labelstore", "pack", d / "lpld90", d / "b.h5", "--image-size", 32, "--force")
    shutil.copytree(d / "lpld50", d / "lpld-noorder")
    os.remove(d / "lpld-noorder" / "sampler_indices_epoch.json")
    case("LPLD pool without its `sampler_indices_epoch.json`", "labelstore", "pack", d / "lpld-noorder", d / "c.h5", "--num-images", 40)
    write_sre2l(d / "nolast", num_images=40, epochs=2, batch_size=8)
    for e in range(2):
        os.remove(d / "nolast" / f"epoch_{e}" / "batch_4.tar")
    case("SRe2L folder, last batch missing from every epoch", "labelstore", "pack", d / "nolast", d / "d.h5")
    case("… with `--skip-bad`", "labelstore", "pack", d / "nolast", d / "d.h5", "--skip-bad")
    case("… with `--num-images 40`", "labelstore", "pack", d / "nolast", d / "d.h5", "--num-images", 40)
    case("… with `--num-images 40 --skip-bad`", "labelstore", "pack", d / "nolast", d / "d.h5", "--num-images", 40, "--skip-bad", "--force")
    case("… with `--num-images 24` (fewer images than the files cover)", "labelstore", "pack", d / "nolast", d / "e.h5", "--num-images", 24)
    write_sre2l(d / "badfirst", num_images=40, epochs=2, batch_size=16)
    (d / "badfirst" / "epoch_0" / "batch_0.tar").write_bytes(b"garbage")
    case("SRe2L folder, `epoch_0/batch_0.tar` unreadable", "labelstore", "pack", d / "badfirst", d / "f.h5")
    case("… with `--skip-bad`", "labelstore", "pack", d / "badfirst", d / "f.h5", "--skip-bad", "--force")
    write_hald(d / "hald", num_images=40, epochs=3, batch_size=16)
    (d / "hald" / "epoch_0.tar").write_bytes(b"garbage")
    case("HALD folder, `epoch_0.tar` unreadable, `--skip-bad`", "labelstore", "pack", d / "hald", d / "g.h5", "--image-size", 32, "--skip-bad", "--force")
    images = np.random.default_rng(0).integers(0, 256, (32, 32, 32, 3), dtype=np.uint8)
    np.savez(d / "images32.npz", images=images)
    case("`--images` with 32 images for labels of 40", "labelstore", "pack", d / "badfirst", d / "h.h5", "--images", d / "images32.npz", "--skip-bad")
    case("`--codec topq:k=3 --budget 1MB` (typo)", "labelstore", "pack", d / "lpld50", d / "i.h5", "--codec", "topq:k=3", "--budget", "1MB")
    case("`--budget 2KB` (nothing fits)", "labelstore", "pack", d / "lpld50", d / "j.h5", "--budget", "2KB")
    case("`budget --codecs dense16,topk=10`", "labelstore", "budget", "--images", 1000, "--classes", 100, "--epochs", 10, "--batch-size", 100, "--budget", "1MB", "--codecs", "dense16,topk=10")
    case("export of a file whose orders are LPLD's", "labelstore", "export", d / "a.h5", "--to", "sre2l", d / "out", "--quiet")
    case("… with `--strict`", "labelstore", "export", d / "a.h5", "--to", "sre2l", d / "out2", "--strict", "--quiet")
    case("`verify` of a missing file", "labelstore", "verify", d / "missing.h5")
    raw = bytearray((d / "a.h5").read_bytes())
    raw[-100] ^= 0xFF
    (d / "damaged.h5").write_bytes(bytes(raw))
    case("`verify` of a file with one flipped byte", "labelstore", "verify", d / "damaged.h5", "--quiet")
    case("`inspect` of an .npz (not a label file)", "labelstore", "inspect", d / "images32.npz")
    x, y = make_digits(20)
    np.savez(d / "digits-float.npz", images=x, labels=y)  # float64 0..16, as a user would export it
    case("`distill squeeze` on 8x8 float64 digits (0..16)", "distill", "squeeze", "--data", d / "digits-float.npz", "--out", d / "sq", "--epochs", 1)
    print("| input | what the tool says (first line) | exit |")
    print("|---|---|---|")
    for what, said, code in rows:
        print(f"| {what} | `{said}` | {code} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
