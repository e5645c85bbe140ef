#!/usr/bin/env bash
# Installs the PostgreSQL server binaries when the machine has none (Debian/Ubuntu).
set -euo pipefail
if [ -n "${WAREHOUSE_URL:-}" ] && [ -n "${AIRFLOW__DATABASE__SQL_ALCHEMY_CONN:-}" ]; then exit 0; fi
if command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/initdb" ]; then exit 0; fi
if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  # The package may start its own cluster on 5432; the project runs its own and does not need it.
  (command -v pg_ctlcluster >/dev/null && pg_lsclusters -h 2>/dev/null | awk '{print $1, $2}' | while read v c; do pg_ctlcluster "$v" "$c" stop || true; done) || true
else
  echo "PostgreSQL server binaries are missing: install the 'postgresql' package, or set PG_BINDIR, or set WAREHOUSE_URL." >&2
  exit 1
fi
