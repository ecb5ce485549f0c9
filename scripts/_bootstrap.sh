# shellcheck shell=bash
# Sourced by scripts/dev and scripts/test (not run on its own): the repository root, the
# project virtualenv in .venv (created and kept in step with pyproject.toml), and the
# environment both commands share. Callers set FP_TAG (the prefix of their log lines) first.
#
#   FP_PYTHON     interpreter used to create .venv (default: python3.11, else python3.12/python3)
#   FP_NO_INSTALL =1 skips the pip step even when pyproject.toml changed (offline work)

FP_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
FP_VENV="$FP_ROOT/.venv"
FP_PY="$FP_VENV/bin/python"
FP_ORIG_PATH="${FP_ORIG_PATH:-$PATH}"   # PATH before .venv/bin went in front (the venv has a redis-server too)
: "${FP_TAG:=fp}"

fp_log() { printf '[%s] %s\n' "$FP_TAG" "$*" >&2; }
fp_die() { printf '[%s] error: %s\n' "$FP_TAG" "$*" >&2; exit 1; }
fp_is_root() { [ "$(id -u)" = 0 ]; }

# sha256 of a file, with whatever this machine has.
fp_sha256() {
    if command -v sha256sum >/dev/null 2>&1; then
        sha256sum "$1" | cut -d' ' -f1
    elif command -v shasum >/dev/null 2>&1; then
        shasum -a 256 "$1" | cut -d' ' -f1
    else
        "$FP_PY" -c 'import hashlib, sys; print(hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest())' "$1"
    fi
}

# A Python the project supports (>=3.11,<3.13), preferring 3.11 (the tested one).
fp_find_python() {
    local candidate check='import sys, venv; sys.exit(not ((3, 11) <= sys.version_info[:2] < (3, 13)))'
    if [ -n "${FP_PYTHON:-}" ]; then
        "$FP_PYTHON" -c "$check" 2>/dev/null && command -v "$FP_PYTHON" && return 0
        fp_log "FP_PYTHON=$FP_PYTHON is not a runnable Python 3.11 or 3.12 with venv"
        return 1
    fi
    for candidate in python3.11 python3.12 python3; do
        if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c "$check" 2>/dev/null; then
            command -v "$candidate"
            return 0
        fi
    done
    return 1
}

# pip install -e '.[test]' in .venv, output to a log that is shown only when it fails.
fp_pip_install() {
    local log="$FP_VENV/pip-install.log"
    # editable_mode=compat puts the repository root on sys.path, so top-level packages and
    # modules added after the install (definitions.py, assets/, ...) import without a reinstall.
    if "$FP_PY" -m pip install --disable-pip-version-check -e '.[test]' \
        --config-settings editable_mode=compat >"$log" 2>&1; then
        return 0
    fi
    if grep -qi 'editable_mode\|compat' "$log"; then   # a setuptools without compat mode
        "$FP_PY" -m pip install --disable-pip-version-check -e '.[test]' >>"$log" 2>&1 && return 0
    fi
    tail -n 40 "$log" >&2
    fp_die "pip install -e '.[test]' failed (full log: $log)"
}

fp_ensure_venv_locked() {
    if [ ! -e "$FP_PY" ]; then
        local python
        python="$(fp_find_python)" ||
            fp_die "no Python 3.11 found (looked for python3.11, python3.12, python3); install Python 3.11 or set FP_PYTHON=/path/to/python3.11"
        fp_log "creating .venv with $("$python" -V 2>&1) ($python)"
        "$python" -m venv "$FP_VENV" || fp_die "could not create $FP_VENV with $python"
        "$FP_PY" -m pip install --disable-pip-version-check -q --upgrade pip >"$FP_VENV/pip-install.log" 2>&1 ||
            fp_log "warning: could not upgrade pip; going on with $("$FP_PY" -m pip --version 2>&1 | cut -d' ' -f1-2)"
    fi
    "$FP_PY" -c 'import sys' 2>/dev/null ||
        fp_die "$FP_PY does not run (was its Python moved or removed?); delete .venv and run this again"

    local stamp="$FP_VENV/.fp-pyproject.sha256" want
    want="$(fp_sha256 "$FP_ROOT/pyproject.toml")"
    if [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] && [ -x "$FP_VENV/bin/feature-platform" ]; then
        fp_log "venv: .venv up to date with pyproject.toml"
    elif [ "${FP_NO_INSTALL:-0}" = 1 ]; then
        fp_log "venv: pyproject.toml changed since the last install, but FP_NO_INSTALL=1: not installing"
    else
        local started=$SECONDS
        fp_log "venv: pip install -e '.[test]' (pyproject.toml changed or first run; a cold install takes 1-2 min)"
        fp_pip_install
        printf '%s\n' "$want" >"$stamp"
        fp_log "venv: installed in $((SECONDS - started))s"
    fi
}

# Create or update .venv; serialised with flock so scripts/dev and scripts/test started
# together do not run pip into the same venv at once.
fp_ensure_venv() {
    cd "$FP_ROOT" || exit 1
    if command -v flock >/dev/null 2>&1; then
        local lock
        lock="${TMPDIR:-/tmp}/fp-venv-$(printf '%s' "$FP_VENV" | cksum | cut -d' ' -f1).lock"
        (
            flock -w 900 9 || fp_die "timed out waiting for another bootstrap of $FP_VENV (lock $lock)"
            fp_ensure_venv_locked
        ) 9>"$lock" || exit 1
    else
        fp_ensure_venv_locked
    fi
    export VIRTUAL_ENV="$FP_VENV"
    export PATH="$FP_VENV/bin:$PATH"
    export PIP_DISABLE_PIP_VERSION_CHECK=1
    unset PYTHONHOME
}

# Spark in Dagster and in tests (DEPENDENCIES.md, trap 5).
fp_spark_env() {
    export PYSPARK_PYTHON="${PYSPARK_PYTHON:-$FP_PY}"
    export PYSPARK_DRIVER_PYTHON="${PYSPARK_DRIVER_PYTHON:-$FP_PY}"
    export SPARK_LOCAL_IP="${SPARK_LOCAL_IP:-127.0.0.1}"
}

# $1/dagster.yaml: SQLite storage under $1 and no telemetry (trap 11). A file without the
# marker line was written or edited by hand and is kept as it is.
fp_write_dagster_yaml() {
    local home="$1" file="$1/dagster.yaml"
    local marker="# Written by scripts/_bootstrap.sh; remove this line to keep your own edits."
    mkdir -p "$home" || fp_die "cannot create DAGSTER_HOME=$home"
    if [ -f "$file" ] && [ "$(head -n 1 "$file")" != "$marker" ]; then
        fp_log "dagster: keeping the hand-edited $file"
        return 0
    fi
    cat >"$file.tmp.$$" <<EOF
$marker
# Dagster instance for one machine: runs, event logs and schedules in SQLite under here.
storage:
  sqlite:
    base_dir: $home/storage
local_artifact_storage:
  module: dagster._core.storage.root
  class: LocalArtifactStorage
  config:
    base_dir: $home
telemetry:
  enabled: false
# The CDC sensor ticks every 5 s: keep its skipped ticks (nothing new landed) for a day.
retention:
  sensor:
    purge_after_days:
      skipped: 1
# CDC sensor runs one at a time, in the order requested: each rebuilds its hours from what was
# staged when it started, so two at once could let the older one finish last and leave its
# partitions behind the newer one's (deploy/dagster.yaml holds the same limit).
# The daemon looks at the queue every second instead of every 5 s: a landed batch's run waits
# for a dequeue before its process even starts (one SQLite query per second when idle).
run_queue:
  dequeue_interval_seconds: 1
  tag_concurrency_limits:
    - key: dagster/sensor_name
      value: cdc_landing_sensor
      limit: 1
EOF
    mv "$file.tmp.$$" "$file"
    export DAGSTER_DISABLE_TELEMETRY=yes
}
