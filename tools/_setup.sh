# Shared set-up for tools/test and tools/demo (sourced, not run): Debian packages, venv, project install.
# Idempotent: what is already there is not installed again.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${OCICOPY_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"

need_apt=()
command -v docker-registry >/dev/null 2>&1 || need_apt+=(docker-registry)
command -v skopeo >/dev/null 2>&1 || need_apt+=(skopeo)
command -v umoci >/dev/null 2>&1 || need_apt+=(umoci)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
command -v jq >/dev/null 2>&1 || need_apt+=(jq)  # the lock file is read with one jq line (tested)
command -v prometheus-pushgateway >/dev/null 2>&1 || need_apt+=(prometheus-pushgateway)  # --metrics-push is tested against it
if ((${#need_apt[@]})); then
    echo "setup: installing Debian packages: ${need_apt[*]}" >&2
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq >&2
    $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >&2
fi
# The Debian package may start a registry service on :5000 where systemd runs; ours start their own.

if [ ! -x "$VENV/bin/python" ]; then
    echo "setup: creating venv $VENV" >&2
    "$PY" -m venv "$VENV"
fi
stamp="$VENV/.ocicopy-installed"
if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ]; then
    echo "setup: installing ocicopy and its test dependencies into $VENV" >&2
    log="$VENV/pip-install.log"
    if ! { "$VENV/bin/python" -m pip install --upgrade pip && "$VENV/bin/python" -m pip install -e "$ROOT[dev]"; } \
        >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        echo "setup: pip install failed (full log: $log)" >&2
        exit 1
    fi
    touch "$stamp"
fi
export PATH="$VENV/bin:$PATH"
cd "$ROOT"
