#!/usr/bin/env bash
# The GPU check in one command (issue #20): on a machine with a CUDA device, run the GPU tests
# and the benchmarks on CUDA within a fixed time budget, and write their figures as Markdown
# ready for docs/performance.md.
#
#   benchmarks/gpu_check.sh [--out PATH]          (default: gpu_check.md in the current folder)
#
# Environment:
#   PYTHON               the interpreter with torch and privbench installed
#                        (default: .venv/bin/python if the repository has one, else python)
#   GPU_CHECK_BUDGET     seconds for everything, the CUDA probe included (default 450: under
#                        8 minutes even with every step's kill grace); a step gets its own
#                        timeout or what is left of the budget, whichever is less
#   GPU_CHECK_DRY_RUN=1  print the steps it would run, one a line, and run none (no CUDA
#                        needed, nothing written)
#
# Steps, each under `timeout`, each reported even when it fails or times out (the script goes
# on and exits 1 at the end if any failed):
#   gpu-tests         $PYTHON -m pytest -q -m gpu tests/test_gpu.py
#   curvature         benchmarks/curvature_throughput.py at its defaults (the CPU table's sizes)
#   shadow-digits     benchmarks/shadow_throughput.py, small-cnn on digits, K = 4, 16, 64
#   shadow-fashion    the same for conv-fc on Fashion-MNIST, where the dataset is installed
#   dp                benchmarks/dp_throughput.py (DP-SGD against non-DP), where it exists
#   e2e               benchmarks/e2e.py: privbench bench benchmarks/smoke.toml, split by stage
#   run               privbench run on its defaults in a fresh workspace, timed
#   curvature-batch   curvature_throughput.py with all 1024 samples in one batch
#
# Without a CUDA device it says so in one line and exits 0, running nothing else.

set -uo pipefail

usage() {
    sed -n '2,/^$/{s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
}

origin=$PWD
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=gpu_check.md
while (($#)); do
    case $1 in
        --out)
            if (($# < 2)); then
                echo "gpu_check: --out needs a path" >&2
                exit 2
            fi
            out=$2
            shift 2
            ;;
        --out=*)
            out=${1#--out=}
            shift
            ;;
        -h | --help)
            usage
            exit 0
            ;;
        *)
            echo "gpu_check: unknown argument '$1' (usage: benchmarks/gpu_check.sh [--out PATH])" >&2
            exit 2
            ;;
    esac
done
[[ $out == /* ]] || out=$origin/$out

budget=${GPU_CHECK_BUDGET:-450}
if ! [[ $budget =~ ^[0-9]+$ ]]; then
    echo "gpu_check: GPU_CHECK_BUDGET must be a number of seconds, not '$budget'" >&2
    exit 2
fi
dry_run=${GPU_CHECK_DRY_RUN:-0}
[[ $dry_run == 0 || -z $dry_run ]] && dry_run=0

if [[ -n ${PYTHON:-} ]]; then
    # A relative path means one from where the script was called; a bare name, one on PATH.
    [[ $PYTHON == */* && $PYTHON != /* ]] && PYTHON=$origin/$PYTHON
elif [[ -x $root/.venv/bin/python ]]; then
    PYTHON=.venv/bin/python
elif command -v python >/dev/null; then
    PYTHON=python
else
    PYTHON=python3
fi
cd "$root" || exit 2

started=$SECONDS

# --- The CUDA probe, before anything else -------------------------------------------------
if [[ $dry_run == 0 ]]; then
    probe=$(timeout --kill-after=5 60 "$PYTHON" - 2>&1 <<'EOF'
import platform
import torch
print(f"torch={torch.__version__}")
if not torch.cuda.is_available():
    print("cuda=no")
    raise SystemExit(0)
print("cuda=yes")
print(f"name={torch.cuda.get_device_name(0)}")
print(f"count={torch.cuda.device_count()}")
memory = torch.cuda.get_device_properties(0).total_memory / 2**30
print(f"memory={memory:.0f} GiB")
print(f"cuda_version={torch.version.cuda}")
print(f"cudnn={torch.backends.cudnn.version()}")
print(f"python={platform.python_version()}")
try:
    import privbench  # noqa: F401
    import privbench_plugins  # noqa: F401
except ImportError as err:
    print(f"privbench=missing: {err}")
else:
    print("privbench=ok")
EOF
    )
    status=$?
    # The answers are KEY=VALUE lines; anything else (a warning from torch) is left out.
    field() { sed -n "s/^$1=//p" <<<"$probe" | head -n 1; }
    if ((status != 0)) || [[ -z $(field cuda) ]]; then
        echo "gpu_check: PYTHON=$PYTHON could not tell whether CUDA is here (exit $status): $(tail -n 1 <<<"$probe")" >&2
        exit 2
    fi
    torch_version=$(field torch)
    if [[ $(field cuda) != yes ]]; then
        echo "gpu_check: no CUDA device here (torch.cuda.is_available() is False with PYTHON=$PYTHON, torch $torch_version): nothing to check"
        exit 0
    fi
    if [[ $(field privbench) != ok ]]; then
        echo "gpu_check: CUDA is here, but PYTHON=$PYTHON cannot import privbench ($(field privbench)); install it there (pip install -e .) or set PYTHON" >&2
        exit 2
    fi
    gpu_name=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1)
    [[ -n $gpu_name ]] || gpu_name=$(field name)
    driver=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -n 1)
fi

# --- The steps ------------------------------------------------------------------------------
work=""
if [[ $dry_run == 0 ]]; then
    work=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX") || exit 2
    trap 'rm -rf "$work"' EXIT
    export PYTHONUNBUFFERED=1
else
    echo "gpu_check: dry run (GPU_CHECK_DRY_RUN=$dry_run): the steps it would run, one a line; none run, nothing written; budget $budget s"
fi
workspace=${work:-${TMPDIR:-/tmp}/gpu_check.XXXXXX}/workspace

# accepts SCRIPT FLAG: whether SCRIPT's argument parser declares FLAG (its literal "FLAG").
accepts() { grep -q -- "\"$2\"" "$1" 2>/dev/null; }

fashion_mnist_installed() {
    local folder file
    for folder in ${PRIVBENCH_DATA:+"$PRIVBENCH_DATA" "$PRIVBENCH_DATA/FashionMNIST/raw"} \
        /usr/share/datasets/fashion-mnist; do
        for file in "$folder"/train-images-idx3-ubyte{,.gz}; do
            [[ -f $file ]] && return 0
        done
    done
    return 1
}

quote() {
    local word quoted=()
    for word in "$@"; do
        if [[ $word =~ ^[A-Za-z0-9_./:=+-]+$ ]]; then quoted+=("$word"); else quoted+=("$(printf '%q' "$word")"); fi
    done
    echo "${quoted[*]}"
}

now() { date -u '+%Y-%m-%d %H:%M UTC'; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

names=() results=() durations=()
failed=0 passed=0 skipped=0

section_head() { # TITLE COMMAND
    {
        echo
        echo "## $1"
        echo
    } >>"$out"
}

skip() { # NAME TITLE REASON
    names+=("$1") results+=("skipped: $3") durations+=("")
    skipped=$((skipped + 1))
    if [[ $dry_run != 0 ]]; then
        echo "$1: skipped: $3"
        return
    fi
    echo "gpu_check: $1: skipped: $3"
    section_head "$2"
    echo "Skipped: $3." >>"$out"
}

# step NAME TITLE TIMEOUT KIND COMMAND...: KIND markdown (its output goes in as it is) or text
# (its output's end goes in a code block).
step() {
    local name=$1 title=$2 limit=$3 kind=$4
    shift 4
    local shown
    shown=$(quote "$@")
    if [[ $dry_run != 0 ]]; then
        names+=("$name")
        echo "$name (timeout $limit s): $shown"
        return
    fi
    local left=$((budget - (SECONDS - started) - 15))
    if ((left < 20)); then
        skip "$name" "$title" "no time left in the ${budget} s budget"
        return
    fi
    ((limit > left)) && limit=$left
    local when begin end status seconds result
    when=$(now)
    echo "gpu_check: $name: $shown (timeout $limit s)"
    begin=${EPOCHREALTIME:-$(date +%s.%N)}
    timeout --kill-after=10 "$limit" "$@" >"$work/$name.out" 2>"$work/$name.err"
    status=$?
    end=${EPOCHREALTIME:-$(date +%s.%N)}
    seconds=$(elapsed "$begin" "$end")
    if ((status == 0)); then
        result="passed"
        passed=$((passed + 1))
    elif ((status == 124 || status == 137)); then
        result="TIMED OUT (its limit: $limit s)"
        failed=$((failed + 1))
    else
        result="FAILED (exit $status)"
        failed=$((failed + 1))
    fi
    names+=("$name") results+=("$result") durations+=("$seconds")
    echo "gpu_check: $name: $result, $seconds s"
    section_head "$title"
    {
        echo "\`$shown\`"
        echo
        echo "$gpu_name, torch $torch_version, $when: $result, $seconds s."
        echo
        if ((status == 0)) && [[ $kind == markdown ]]; then
            cat "$work/$name.out"
        else
            ((status == 0)) || echo "The end of its output (stdout, then stderr):"
            ((status == 0)) || echo
            echo '```'
            tail -n 40 "$work/$name.out"
            ((status == 0)) || tail -n 20 "$work/$name.err"
            echo '```'
        fi
    } >>"$out"
}

if [[ $dry_run == 0 ]]; then
    commit=$(git rev-parse --short HEAD 2>/dev/null)
    if [[ -n $commit ]] && [[ -n $(git status --porcelain --untracked-files=no 2>/dev/null) ]]; then
        commit="$commit (with uncommitted changes)"
    fi
    mkdir -p "$(dirname "$out")" || exit 2
    {
        echo "# GPU check: $gpu_name"
        echo
        echo "Written by \`benchmarks/gpu_check.sh\` on $(now)."
        echo
        echo "- GPU: $gpu_name ($(field memory)${driver:+, driver $driver}; $(field count) visible)"
        echo "- torch $torch_version, CUDA $(field cuda_version), cuDNN $(field cudnn); Python $(field python) (\`$PYTHON\`)"
        echo "- $(nproc 2>/dev/null || echo '?') CPU cores${commit:+; commit $commit}"
        echo "- budget $budget s in all; each step under its own timeout"
    } >"$out" || exit 2
    echo "gpu_check: $gpu_name, torch $torch_version; writing $out"
fi

step gpu-tests "GPU tests: tests/test_gpu.py" 150 text \
    "$PYTHON" -m pytest -q -m gpu tests/test_gpu.py

markdown_if() { accepts "$1" --markdown && echo markdown || echo text; }
markdown_flag() { accepts "$1" --markdown && echo --markdown; }

script=benchmarks/curvature_throughput.py
step curvature "Curvature scoring: $script" 60 markdown \
    "$PYTHON" "$script" --device cuda --markdown

script=benchmarks/shadow_throughput.py
# shellcheck disable=SC2046  # markdown_flag prints one word or none
step shadow-digits "Shadow pools, small-cnn on digits: $script" 90 "$(markdown_if "$script")" \
    "$PYTHON" "$script" --device cuda $(markdown_flag "$script") --models 4 16 64

title="Shadow pools, conv-fc on Fashion-MNIST: $script"
if ! accepts "$script" --dataset; then
    skip shadow-fashion "$title" "$script has no --dataset flag (it measures digits only)"
elif ! fashion_mnist_installed; then
    skip shadow-fashion "$title" "Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist, or PRIVBENCH_DATA)"
else
    # shellcheck disable=SC2046
    step shadow-fashion "$title" 75 "$(markdown_if "$script")" \
        "$PYTHON" "$script" --device cuda $(markdown_flag "$script") \
        --dataset fashion-mnist --model conv-fc --models 4 16
fi

script=benchmarks/dp_throughput.py
title="DP-SGD against non-DP training: $script"
if [[ -f $script ]]; then
    # shellcheck disable=SC2046
    step dp "$title" 75 "$(markdown_if "$script")" \
        "$PYTHON" "$script" --device cuda $(markdown_flag "$script") \
        $(accepts "$script" --quick && echo --quick)
else
    skip dp "$title" "$script is not in this tree"
fi

script=benchmarks/e2e.py
step e2e "End to end, by stage: $script" 75 markdown \
    "$PYTHON" "$script" --device cuda --markdown

step run "End to end: privbench run on its defaults, cold workspace" 60 text \
    "$PYTHON" -m privbench run --device cuda -w "$workspace" -q

script=benchmarks/curvature_throughput.py
step curvature-batch "Curvature scoring, one batch of 1024: $script" 45 markdown \
    "$PYTHON" "$script" --device cuda --markdown --batch 1024

if [[ $dry_run != 0 ]]; then
    exit 0
fi

{
    echo
    echo "## Summary"
    echo
    echo "| step | result | seconds |"
    echo "|---|---|---:|"
    for i in "${!names[@]}"; do
        echo "| ${names[$i]} | ${results[$i]} | ${durations[$i]} |"
    done
    echo
    echo "$passed passed, $failed failed, $skipped skipped in $((SECONDS - started)) s."
} >>"$out"
echo "gpu_check: wrote $out: $passed passed, $failed failed, $skipped skipped in $((SECONDS - started)) s"
((failed == 0))
