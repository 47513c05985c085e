"""Packaging: the core distribution is the label file format alone (numpy, h5py, zstandard,
tqdm); a command that needs a missing extra ends with one line naming the install command.

The slow test builds the wheel, installs it into a fresh virtual environment without torch
(pip fetches the four core dependencies from the package registry, or its cache) and runs
the core CLI from there. The fast tests check the CLIs' help and versions in this checkout.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE = {"numpy", "h5py", "zstandard", "tqdm"}
EXTRAS = {"loaders", "plot", "ffcv", "distill", "teachers", "photos", "all", "dev"}
LABELSTORE_COMMANDS = ("inspect", "verify", "pack", "budget", "export", "merge", "drift")
DISTILL_COMMANDS = ("squeeze", "recover", "relabel", "train", "evaluate", "demo")
def _run(cmd, *, env=None, cwd=None, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)


def _one_line_error(r: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit 2 with exactly one line on stderr (no traceback) that contains every needle."""
    out = f"rc={r.returncode}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}"
    assert r.returncode == 2, out
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, out
    for n in needles:
        assert n in lines[0], out
    return lines[0]


def _pypi_reachable() -> bool:
    """Whether pip reaches PyPI itself (not the local indexes pip may be configured with)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_") or k == "PIP_CERT"}
    env["PIP_CONFIG_FILE"] = os.devnull
    r = _run([sys.executable, "-m", "pip", "index", "versions", "numpy", "--index-url", "https://pypi.org/simple",
              "--timeout", "10", "--retries", "0", "--disable-pip-version-check"], env=env, timeout=60)
    return r.returncode == 0


# ---------------------------------------------------------------------------- the wheel, fresh venv


@pytest.fixture(scope="module")
def core_env(tmp_path_factory):
    """A fresh venv holding only the built wheel and what pip installs for it (no extras)."""
    tmp = tmp_path_factory.mktemp("core-install")
    src = tmp / "src"  # build from a copy: no build/ or *.egg-info in the shared checkout
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for pkg in ("labelstore", "loaders", "distill"):
        shutil.copytree(ROOT / pkg, src / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    r = _run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", tmp / "wheels", src], timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    (wheel,) = (tmp / "wheels").glob("labelstore_kit-*.whl")
    venv = tmp / "venv"
    r = _run([sys.executable, "-m", "venv", "--without-pip", venv])  # pip is this one's, via --python
    assert r.returncode == 0, r.stdout + r.stderr
    py = venv / "bin" / "python"
    try:  # short network timeouts: an unreachable index fails in seconds, not pip's 180 s x 5 retries
        r = _run([*pip, "--python", py, "install", "-q", "--timeout", "15", "--retries", "2", wheel], timeout=400)
    except subprocess.TimeoutExpired as exc:
        r = subprocess.CompletedProcess(exc.cmd, -1, str(exc.stdout or ""), f"timed out after {exc.timeout} s")
    if r.returncode != 0:
        if not _pypi_reachable():
            pytest.skip("PyPI is unreachable from here (pip index versions numpy failed): "
                        "cannot install the core dependencies into a fresh venv")
        pytest.fail(f"pip install {wheel.name} into a fresh venv failed:\n{r.stdout}\n{r.stderr}")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    work = tmp / "work"
    work.mkdir()
    return {"wheel": wheel, "py": py, "bin": venv / "bin", "env": env, "work": work}


def _in(core, prog: str, *args, **kw) -> subprocess.CompletedProcess:
    return _run([core["bin"] / prog, *args], env=core["env"], cwd=core["work"], **kw)


@pytest.mark.slow
def test_core_wheel_needs_only_the_format_dependencies(core_env):
    with zipfile.ZipFile(core_env["wheel"]) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        lines = z.read(meta).decode().splitlines()
    requires = [l.split(":", 1)[1].strip() for l in lines if l.startswith("Requires-Dist:")]
    core = {r.split(";")[0].split(">")[0].split("=")[0].split("<")[0].strip().lower() for r in requires if ";" not in r}
    assert core == CORE, requires
    extras = {l.split(":", 1)[1].strip() for l in lines if l.startswith("Provides-Extra:")}
    assert EXTRAS <= extras, extras

    py, env, work = core_env["py"], core_env["env"], core_env["work"]
    for mod in ("torch", "torchvision", "matplotlib"):  # the venv really lacks the extras
        r = _run([py, "-c", f"import {mod}"], env=env, cwd=work)
        assert r.returncode != 0 and "ModuleNotFoundError" in r.stderr, (mod, r.stderr)
    r = _run([py, "-c", "import sys, labelstore; print(sorted({'torch', 'matplotlib'} & set(sys.modules)))"],
             env=env, cwd=work)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr


@pytest.mark.slow
def test_core_cli_from_the_wheel_without_torch(core_env):
    work = core_env["work"]
    version = core_env["wheel"].name.split("-")[1]
    r = _in(core_env, "labelstore", "--version")
    assert r.returncode == 0 and r.stdout.strip() == f"labelstore {version}", r.stdout + r.stderr
    r = _in(core_env, "labelstore", "--help")
    assert r.returncode == 0, r.stderr
    for name in LABELSTORE_COMMANDS:
        assert name in r.stdout, (name, r.stdout)

    rng = np.random.default_rng(0)
    np.savez(work / "arrays.npz", logits=rng.normal(0, 2, (2, 40, 10)).astype(np.float32), batch_size=np.int64(8))
    np.save(work / "classes.npy", rng.integers(0, 10, 40))
    r = _in(core_env, "labelstore", "pack", "arrays.npz", "labels.h5", "--image-size", "32", "--quiet")
    assert r.returncode == 0 and "80 records" in r.stdout, r.stdout + r.stderr
    r = _in(core_env, "labelstore", "inspect", "labels.h5")
    assert r.returncode == 0 and "records    80" in r.stdout, r.stdout + r.stderr
    r = _in(core_env, "labelstore", "inspect", "labels.h5", "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert (info["records"], info["classes"], info["images"], info["epochs"]) == (80, 10, 40, 2)
    r = _in(core_env, "labelstore", "verify", "labels.h5")
    assert r.returncode == 0 and r.stdout.startswith("OK"), r.stdout + r.stderr
    r = _in(core_env, "labelstore", "budget", "--images", "40", "--classes", "10", "--epochs", "2",
            "--batch-size", "8", "--budget", "100KB")
    assert r.returncode == 0 and "dense16" in r.stdout, r.stdout + r.stderr
    r = _in(core_env, "labelstore", "drift", "labels.h5", "--classes", "classes.npy")
    assert r.returncode == 0 and "records" in r.stdout, r.stdout + r.stderr
    shards = ("import numpy as np\nfrom labelstore import LabelWriter\nfor rank in range(2):\n"
              "    w = LabelWriter('merged.h5', num_classes=4, num_images=10, seed=1, image_sizes=(8, 8), shard=(rank, 2))\n"
              "    w.begin_epoch(0, 4)\n    for b in range(w.num_batches(0)):\n        if w.owns(b):\n"
              "            w.write_batch(0, b, np.zeros((len(w.batch_indices(0, b)), 4), np.float32))\n"
              "    w.finalize()\n")
    r = _run([core_env["py"], "-c", shards], env=core_env["env"], cwd=work)  # the core API writes shards
    assert r.returncode == 0, r.stderr
    r = _in(core_env, "labelstore", "merge", "merged.h5")
    assert r.returncode == 0, r.stdout + r.stderr
    assert _in(core_env, "labelstore", "verify", "merged.h5", "--quiet").returncode == 0

    # what needs an extra: one line naming the install command, exit 2, nothing written
    r = _in(core_env, "labelstore", "drift", "labels.h5", "--classes", "classes.npy", "--plot", "drift.png")
    _one_line_error(r, "matplotlib", "pip install 'labelstore-kit[plot]'")
    assert not (work / "drift.png").exists()
    (work / "sre2l" / "epoch_0").mkdir(parents=True)
    (work / "sre2l" / "epoch_0" / "batch_0.tar").write_bytes(b"not a torch.save file")
    r = _in(core_env, "labelstore", "pack", "sre2l", "from_sre2l.h5")
    _one_line_error(r, "needs torch", "pip install")
    assert not (work / "from_sre2l.h5").exists()
    r = _in(core_env, "labelstore", "export", "labels.h5", "--to", "sre2l", "exported")
    _one_line_error(r, "needs torch", "pip install")


@pytest.mark.slow
def test_core_distill_names_its_extra(core_env):
    r = _in(core_env, "distill", "--help")
    assert r.returncode == 0, r.stdout + r.stderr
    r = _in(core_env, "distill", "squeeze", "--help")
    _one_line_error(r, "distill squeeze", "torch", "pip install 'labelstore-kit[distill]'")


# ---------------------------------------------------------------------------- this checkout


def test_pyproject_core_and_extras():
    tomllib = pytest.importorskip("tomllib")
    from labelstore.extras import EXTRA_OF

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {d.split(">")[0].split("=")[0].split("<")[0].split("[")[0].strip().lower() for d in project["dependencies"]}
    assert names == CORE
    extras = project["optional-dependencies"]
    assert EXTRAS <= set(extras)
    assert set(EXTRA_OF.values()) <= set(extras)  # every message names an extra that exists
    assert "labelstore-kit[loaders,plot,ffcv,distill,teachers,photos]" in extras["all"]


def _main(main, argv, capsys) -> tuple[int, str]:
    try:
        rc = main(argv)
    except SystemExit as exc:  # --help and --version exit from argparse
        rc = exc.code
    return rc, capsys.readouterr().out


def test_versions(capsys):
    import labelstore
    from distill.cli import main as distill_main
    from labelstore.cli import main as labelstore_main

    assert _main(labelstore_main, ["--version"], capsys) == (0, f"labelstore {labelstore.__version__}\n")
    assert _main(distill_main, ["--version"], capsys) == (0, f"distill (labelstore-kit) {labelstore.__version__}\n")


def test_top_level_help_lists_every_subcommand(capsys):
    from distill.cli import main as distill_main
    from labelstore.cli import main as labelstore_main

    rc, out = _main(labelstore_main, ["--help"], capsys)
    assert rc == 0 and all(name in out for name in LABELSTORE_COMMANDS), out
    rc, out = _main(distill_main, ["--help"], capsys)
    assert rc == 0 and all(f"    {name} " in out for name in DISTILL_COMMANDS), out


def test_distill_verb_help_shows_every_default():
    from distill.cli import _HelpFormatter, build_parser

    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert set(sub.choices) == set(DISTILL_COMMANDS)
    missing = []
    for name, p in sub.choices.items():
        assert p.formatter_class is _HelpFormatter
        fmt = p.formatter_class(name)
        for a in p._actions:
            plain_flag = a.nargs == 0 and not isinstance(a, argparse.BooleanOptionalAction)
            if not a.option_strings or plain_flag:  # positionals have none; flags are off unless given
                continue
            if "default" not in fmt._get_help_string(a).lower():
                missing.append(f"distill {name} {a.option_strings[0]}")
    assert not missing, f"options whose help shows no default: {missing}"
    text = " ".join(sub.choices["train"].format_help().split())
    assert "(default: hald)" in text and "(default: 300)" in text, text


def test_distill_help_imports_no_torch():
    code = ("import sys\nfrom distill.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted({'torch', 'matplotlib', 'labelstore'} & set(sys.modules)))")
    r = _run([sys.executable, "-c", code])
    assert r.returncode == 0 and r.stdout.strip().endswith("[]"), r.stdout + r.stderr


def test_drift_plot_without_matplotlib_is_one_line(tmp_path):
    from conftest import write_label_set

    write_label_set(tmp_path / "l.h5", num_images=20, epochs=1)
    np.save(tmp_path / "c.npy", np.zeros(20, np.int64))
    code = ("import sys\nsys.modules['matplotlib'] = None  # as if not installed\n"
            "from labelstore.cli import main\nsys.exit(main(sys.argv[1:]))")
    r = _run([sys.executable, "-c", code, "drift", tmp_path / "l.h5", "--classes", tmp_path / "c.npy",
              "--plot", tmp_path / "d.png"])
    _one_line_error(r, "labelstore drift: error: --plot", "pip install 'labelstore-kit[plot]'")
    assert not (tmp_path / "d.png").exists()


def test_distill_without_torch_is_one_line():
    code = ("import sys\nsys.modules['torch'] = None  # as if not installed\n"
            "from distill.cli import main\nsys.exit(main(['squeeze', '--help']))")
    r = _run([sys.executable, "-c", code])
    _one_line_error(r, "distill squeeze", "pip install 'labelstore-kit[distill]'")


def test_loaders_without_torch_names_its_extra():
    code = ("import sys\nsys.modules['torch'] = None  # as if not installed\n"
            "try:\n    import loaders\nexcept ImportError as exc:\n"
            "    print(type(exc).__name__, isinstance(exc, ImportError), exc)\n")
    r = _run([sys.executable, "-c", code])
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert r.stdout.strip() == ("MissingExtra True the loaders package needs torch, which is not installed: "
                                "pip install 'labelstore-kit[loaders]'"), r.stdout
