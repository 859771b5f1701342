# Sourced by the GPU scripts (gpu_check.sh, gpu_learning.sh): Python 3.12 wheels of what a bare
# torch + CUDA image lacks, downloaded here where PyPI is reachable and installed there into a
# private folder without network. Each item is MODULE:DISTRIBUTION (the import name, the name
# pip knows); only the modules the machine's Python cannot find are installed.
#
#   gpu_wheels_download DIR ITEM...           # here: fill DIR with cp312 manylinux wheels
#   gpu_wheels_install PYTHON SITE DIR ITEM...  # there: install what is missing into SITE
#
# Both end the calling script with exit status 2 and a message naming what failed.

gpu_wheels_die() { echo "${GPU_WHEELS_NAME:-gpu_wheels}: $*" >&2; exit 2; }

gpu_wheels_download() {  # DIR ITEM...
    local dir=$1 item dists=()
    shift
    mkdir -p "$dir"
    for item in "$@"; do dists+=("${item#*:}"); done
    # cp312 manylinux wheels, without their dependencies: every one needed is named in ITEMs
    "${PYTHON:-python3}" -m pip download --only-binary=:all: --no-deps --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d "$dir" "${dists[@]}" || gpu_wheels_die "pip could not download ${dists[*]}"
    du -sh "$dir"
}

gpu_wheels_install() {  # PYTHON SITE DIR ITEM...
    local py=$1 site=$2 dir=$3 probe need=()
    shift 3
    command -v "$py" >/dev/null || gpu_wheels_die "no $py on PATH (set PYTHON=/path/to/python3.12)"
    # one interpreter start: what is there (find_spec imports nothing), what must come from DIR
    probe="$(PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}" "$py" - "$@" <<'PY'
import importlib.util as u, sys
def has(module):
    try:
        return u.find_spec(module) is not None
    except (ImportError, ValueError):
        return False
base = [m for m in ("torch", "torchvision", "numpy", "yaml") if not has(m)]
if base:
    print("BASE " + " ".join(base))
print("NEED " + " ".join(p.split(":")[1] for p in sys.argv[1:] if not has(p.split(":")[0])))
PY
)" || gpu_wheels_die "$py failed to start"
    if grep -q '^BASE' <<<"$probe"; then
        gpu_wheels_die "$py lacks $(sed -n 's/^BASE //p' <<<"$probe") (torch with CUDA, \
torchvision, numpy and pyyaml are expected on the machine)"
    fi
    read -r -a need <<<"$(sed -n 's/^NEED *//p' <<<"$probe")"
    ((${#need[@]})) || return 0
    ls "$dir"/*.whl >/dev/null 2>&1 || gpu_wheels_die "missing ${need[*]} and no wheels in \
$dir: run the script with --download on a machine with PyPI access and bring $dir along"
    echo "${GPU_WHEELS_NAME:-gpu_wheels}: installing ${need[*]} from $dir into $site"
    "$py" -m pip install --quiet --no-index --no-deps --no-compile --find-links "$dir" \
        --target "$site" "${need[@]}" || gpu_wheels_die "could not install ${need[*]} from \
$dir (wheels for Python $("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')? \
they are for 3.12)"
}
