#!/usr/bin/env bash
# One entry point for newcomers and CI:  bash scripts/dev.sh demo | test | check | bench
# Creates .venv on first use. torch/torchvision are pinned to the pair that lies on local
# disk here (torch==2.14.1, torchvision==0.29.1): no multi-GB download.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

ensure_postgres() {
  if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
    if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
      pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start || true
    fi
    for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
  fi
}

ensure_venv() {
  if [ ! -x .venv/bin/inforank ] || [ pyproject.toml -nt .venv/.installed ]; then
    [ -d .venv ] || "$PY" -m venv .venv
    .venv/bin/pip install -q --upgrade pip
    .venv/bin/pip install -q "torch==2.14.1" "torchvision==0.29.1"
    .venv/bin/pip install -q -e ".[clip,service,report,parquet,dev]"
    touch .venv/.installed
  fi
}

ensure_chromium() {
  # The report test renders in Debian's chromium; install it where we may (CI runs as root).
  if ! command -v chromium >/dev/null && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 \
      || echo "could not install chromium: the browser test will be skipped" >&2
  fi
}

cmd=${1:-test}
shift || true
case "$cmd" in
  demo)
    ensure_venv
    HF_HUB_OFFLINE=1 .venv/bin/inforank demo "$@" ;;
  test)
    ensure_venv; ensure_postgres; ensure_chromium
    set +e
    HF_HUB_OFFLINE=1 .venv/bin/python -m pytest -n 2 "$@"
    rc=$?
    set -e
    if [ "$rc" -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi
    exit "$rc" ;;
  check)
    ensure_venv
    .venv/bin/ruff check .
    .venv/bin/ruff format --check .
    .venv/bin/mypy
    d=$(mktemp -d); INFORANK_DATABASE_URL="sqlite:///$d/check.sqlite" .venv/bin/alembic upgrade head
    INFORANK_DATABASE_URL="sqlite:///$d/check.sqlite" .venv/bin/alembic check ;;
  bench)
    ensure_venv
    .venv/bin/python -m bench.run_all "$@" ;;
  *) echo "usage: bash scripts/dev.sh demo|test|check|bench" >&2; exit 2 ;;
esac
