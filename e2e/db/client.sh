#!/usr/bin/env bash
# Runs SERVER's own command-line client with --no-defaults: the host's `mariadb` for
# mariadb-10.11, the root's `mariadb` or `mysql` (inside its chroot) for the others.
#
# Usage: e2e/db/client.sh SERVER [CLIENT ARGS...]
#   e2e/db/client.sh mysql-9.7 -h127.0.0.1 -P23326 -ughost_admin -pghost-admin-pass -e 'SELECT 1'
#
# Paths under $GHOST_CACHE_DIR/db/SERVER and $GHOST_CACHE_DIR/tls are the same inside the
# chroot (sockets, --ssl-ca=...); other host files are not visible there (use stdin).
set -euo pipefail
[[ $# -ge 1 ]] || {
  echo "usage: $0 SERVER [CLIENT ARGS...]" >&2
  exit 2
}
server=$1
shift
exec bash "$(dirname "${BASH_SOURCE[0]}")/topology.sh" "$server" client "$@"
