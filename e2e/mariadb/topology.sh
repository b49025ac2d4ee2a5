#!/usr/bin/env bash
# Local MariaDB 10.11 topology for ghost end-to-end tests (primary 23306, replica 23307,
# TLS-only server 23308, lower_case_table_names=1 server 23309; state in
# $GHOST_CACHE_DIR/mariadb). Kept for its callers (scripts/demo, scripts/test, .ci/run):
# e2e/db/topology.sh does the work and documents the commands and the environment
# (`e2e/db/topology.sh help`).
#
# Usage: e2e/mariadb/topology.sh {start|stop|reset|status|env}
#        e2e/mariadb/topology.sh restart ROLE [SECONDS]
set -euo pipefail
exec bash "$(dirname "${BASH_SOURCE[0]}")/../db/topology.sh" mariadb-10.11 "$@"
