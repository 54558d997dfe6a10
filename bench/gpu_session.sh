#!/usr/bin/env bash
# The GPU work that CI cannot do, in stages that each fit one call of the device tool (10 min).
#
# Run from the repository root on a GPU machine whose image already has torch, triton and
# friends but no package registry (the H100/H200 machines of this project):
#
#   bash bench/gpu_session.sh tests      # GPU-marked tests: Triton GDN at production shapes, gsplat parity
#   bash bench/gpu_session.sh gdn        # bench/gdn.py        -> bench/results/gdn.json + .md
#   bash bench/gpu_session.sh geometry   # bench/geometry.py   -> bench/results/geometry.json + .md
#   bash bench/gpu_session.sh render     # bench/render.py --refiner random:sd-turbo -> bench/results/render.json + .md
#   bash bench/gpu_session.sh train      # bench/train.py      -> bench/results/train.json
#   bash bench/gpu_session.sh annotate   # bench/annotate.py --read-clips .clips -> bench/results/annotate_throughput.json + .md
#   bash bench/gpu_session.sh tests:240 render:330   # several stages in one call, each under a time limit (s)
#   ARGS_geometry="--no-compile --profile" bash bench/gpu_session.sh geometry   # extra arguments for a stage
#
# gsplat is not on those images: on the CPU machine first, fetch its wheel into .whl/
# (git-ignored) and name .whl in the call's carry list:
#
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl gsplat==1.5.3
#
# The annotate stage also lacks open3d and av there: render and decode its clips on the CPU machine
# into .clips/ (git-ignored, ~11 MB), put only the pycolmap wheel (38 MB) in .whl/, and carry both:
#
#   python bench/annotate.py --write-clips .clips
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 -d .whl pycolmap==4.2.1
#
# Each stage copies what it wrote, and its log, into $OUT (one .tgz) when $OUT is set.
set -uo pipefail
: "${1:?usage: bash bench/gpu_session.sh STAGE[:SECONDS]... (tests|gdn|geometry|render|train)}"
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0

# wmkit without touching the image's packages: the repo root is the package `wmkit`.
mkdir -p /tmp/wmkit_site
ln -sfn "$PWD" /tmp/wmkit_site/wmkit
export PYTHONPATH=/tmp/wmkit_site${PYTHONPATH:+:$PYTHONPATH}
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/wmkit_deps .whl/*.whl
    export PYTHONPATH=$PYTHONPATH:/tmp/wmkit_deps
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, triton, wmkit; print('torch', torch.__version__, 'triton', triton.__version__)"

status=0
for arg in "$@"; do
    stage=${arg%%:*}
    limit=$([ "$arg" != "$stage" ] && echo "${arg#*:}" || echo 3600)
    log=/tmp/gpu_${stage}.log
    echo "== $stage (limit ${limit} s)"
    case "$stage" in
        # only the files that hold GPU tests: the others need CPU-side packages the image lacks
        tests)    cmd=(python3 -m pytest -q -m gpu -rA $(grep -l "mark.gpu" tests/test_*.py)) ;;
        gdn)      cmd=(python3 bench/gdn.py) ;;
        geometry) cmd=(python3 bench/geometry.py) ;;
        render)   cmd=(python3 bench/render.py --refiner random:sd-turbo) ;;
        train)    cmd=(python3 bench/train.py) ;;
        annotate) cmd=(python3 bench/annotate.py --read-clips .clips) ;;
        *) echo "unknown stage $stage" >&2; exit 2 ;;
    esac
    extra=ARGS_$stage
    timeout --kill-after 10 "$limit" "${cmd[@]}" ${!extra:-} 2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}
    echo "== $stage rc $rc"
    [ "$rc" -ne 0 ] && status=$rc
    if [ -n "${OUT:-}" ]; then
        tar czf "$OUT/$stage.tgz" "$log" bench/results 2>/dev/null
    fi
done
exit "$status"
