#!/usr/bin/env bash
# A real Kubernetes control plane on loopback for ghost's tier-5 tests
# (DESIGN.md §4): etcd, kube-apiserver and kube-controller-manager built from
# Go modules by e2e/k8s/build.sh. There is no kubelet and no scheduler: Pods
# that the Job controller creates stay Pending until a node agent runs them.
#
# Usage: e2e/k8s/cluster.sh {start|stop|status|env|reset|restart-apiserver SECONDS}
#
#   start   build the binaries if they are not cached, make the PKI and the
#           kubeconfigs on first start, start what is not running (idempotent),
#           then wait until /readyz is ok and the ServiceAccount default/default
#           exists
#   stop    stop exactly the processes named by the pid files (SIGTERM, then
#           SIGKILL after a timeout), controller-manager first, etcd last
#   status  show each component; exit 0 only if all three run and /readyz is ok
#   env     print `export` lines for tests and shells:
#             eval "$(e2e/k8s/cluster.sh env)"
#           KUBECONFIG (admin, group system:masters), PATH (bin dir first),
#           GHOST_K8S_BIN_DIR, GHOST_K8S_RUN_DIR, GHOST_K8S_SERVER, GHOST_K8S_CA
#   reset   stop, then delete the run dir (etcd data, PKI, kubeconfigs, logs)
#   restart-apiserver SECONDS
#           stop kube-apiserver, keep it down SECONDS, start it again and wait for
#           /readyz (the journeys' API server restart)
#
# Environment (defaults in brackets):
#   GHOST_CACHE_DIR            cache root [$HOME/.cache/ghost]
#   GHOST_K8S_RUN_DIR          state dir [$GHOST_CACHE_DIR/k8s/run]
#   GHOST_K8S_APISERVER_PORT   kube-apiserver secure port [26443]
#   GHOST_K8S_ETCD_PORT        etcd client port [22379] (plain http)
#   GHOST_K8S_ETCD_PEER_PORT   etcd peer port [22380]
#   GHOST_K8S_KCM_PORT         kube-controller-manager secure port [26257]
#   GHOST_K8S_SERVICE_CIDR     --service-cluster-ip-range [127.96.0.0/16]
#   GHOST_K8S_APISERVER_HOST   the address kube-apiserver binds to and advertises [127.0.0.1];
#                              e2e/k8s/node.sh sets the pod bridge's address, so pods reach it
#                              through the `kubernetes` Service (whose Endpoints then exist)
#   GHOST_K8S_KCM_CONTROLLERS  kube-controller-manager --controllers [*]
#   GHOST_K8S_START_TIMEOUT    seconds to wait for each step [180]
#   GHOST_K8S_STOP_TIMEOUT     seconds to wait for each process to exit [30]
#
# Everything listens on 127.0.0.1 only. The Service CIDR is in the loopback
# range on purpose: a ClusterIP (the `kubernetes` Service is the first one,
# 127.96.0.1) can never route off this machine. A node agent that runs pod
# processes should point KUBERNETES_SERVICE_HOST/PORT at 127.0.0.1 and the
# apiserver port. Endpoints for the `kubernetes` Service are not written
# (--endpoint-reconciler-type=none): the apiserver refuses loopback endpoint IPs.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE_DIR="${GHOST_CACHE_DIR:-${HOME:-/root}/.cache/ghost}"
export GHOST_CACHE_DIR="$CACHE_DIR"
RUN_DIR="${GHOST_K8S_RUN_DIR:-$CACHE_DIR/k8s/run}"
API_PORT="${GHOST_K8S_APISERVER_PORT:-26443}"
ETCD_PORT="${GHOST_K8S_ETCD_PORT:-22379}"
ETCD_PEER_PORT="${GHOST_K8S_ETCD_PEER_PORT:-22380}"
KCM_PORT="${GHOST_K8S_KCM_PORT:-26257}"
SERVICE_CIDR="${GHOST_K8S_SERVICE_CIDR:-127.96.0.0/16}"
KCM_CONTROLLERS="${GHOST_K8S_KCM_CONTROLLERS:-*}"
START_TIMEOUT="${GHOST_K8S_START_TIMEOUT:-180}"
STOP_TIMEOUT="${GHOST_K8S_STOP_TIMEOUT:-30}"
HOST=127.0.0.1
API_HOST="${GHOST_K8S_APISERVER_HOST:-$HOST}"

BIN_DIR="$("$HERE/build.sh" --print-dir)"
PKI="$RUN_DIR/pki"
LOGS="$RUN_DIR/logs"
PIDS="$RUN_DIR/pids"
ETCD_DATA="$RUN_DIR/etcd-data"
ADMIN_KUBECONFIG="$RUN_DIR/admin.kubeconfig"
KCM_KUBECONFIG="$RUN_DIR/kube-controller-manager.kubeconfig"
SERVER="https://$API_HOST:$API_PORT"
COMPONENTS=(etcd kube-apiserver kube-controller-manager) # start order

log() { printf 'k8s: %s\n' "$*"; }
die() {
  printf 'k8s: ERROR: %s\n' "$*" >&2
  exit 1
}

binary_of() { echo "$BIN_DIR/$1"; }
# shellcheck source=../lib/processes.sh
source "$HERE/../lib/processes.sh"

kubectl_admin() { "$BIN_DIR/kubectl" --kubeconfig="$ADMIN_KUBECONFIG" "$@"; }

# ---------------------------------------------------------------- processes

port_busy() { # port_busy <port>: something listens on 127.0.0.1:<port> or *:<port>
  ss -ltnH "sport = :$1" 2>/dev/null | grep -q .
}

# ---------------------------------------------------------------- PKI

# sign <name> <subject> <extensions>: EC P-256 key + cert signed by the CA.
sign() {
  local name="$1" subj="$2" ext="$3"
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$PKI/$name.key" 2>/dev/null
  openssl req -new -key "$PKI/$name.key" -subj "$subj" -out "$PKI/$name.csr" 2>/dev/null
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
    -days 3650 -sha256 -extfile <(printf '%s\n' "$ext") -out "$PKI/$name.crt" 2>/dev/null
  rm -f "$PKI/$name.csr"
}

PKI_FILES=(ca.crt ca.key apiserver.crt apiserver.key admin.crt admin.key
  kube-controller-manager.crt kube-controller-manager.key
  front-proxy-ca.crt front-proxy-client.crt front-proxy-client.key sa.key sa.pub)

ensure_pki() {
  local f complete=1
  for f in "${PKI_FILES[@]}"; do [[ -f "$PKI/$f" ]] || complete=0; done
  [[ -f "$PKI/.complete" && $complete == 1 ]] && return 0
  command -v openssl >/dev/null || die "openssl not found (apt-get install -y openssl)"
  local t0
  t0=$(now_ms)
  rm -rf "$PKI"
  mkdir -p "$PKI"
  chmod 700 "$PKI"
  # Cluster CA: signs the serving cert and the client certs (--client-ca-file),
  # is the kube-controller-manager's --root-ca-file and CSR signer.
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$PKI/ca.key" 2>/dev/null
  openssl req -x509 -new -key "$PKI/ca.key" -subj "/CN=ghost-e2e-ca" -days 3650 -sha256 \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
    -out "$PKI/ca.crt" 2>/dev/null
  # First IP of the Service CIDR: the `kubernetes` Service's ClusterIP.
  local net="${SERVICE_CIDR%/*}" first_ip
  first_ip="${net%.*}.$((${net##*.} + 1))"
  sign apiserver "/CN=kube-apiserver" "basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,IP:$API_HOST,IP:$first_ip,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  local client="basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"
  sign admin "/O=system:masters/CN=admin" "$client"
  sign kube-controller-manager "/CN=system:kube-controller-manager" "$client"
  # Front-proxy (request-header) CA and the apiserver's client cert for
  # aggregated APIs. Without --requestheader-client-ca-file the
  # extension-apiserver-authentication ConfigMap lacks it and every component
  # that delegates authentication (the controller-manager) logs errors forever.
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$PKI/front-proxy-ca.key" 2>/dev/null
  openssl req -x509 -new -key "$PKI/front-proxy-ca.key" -subj "/CN=ghost-e2e-front-proxy-ca" -days 3650 -sha256 \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
    -out "$PKI/front-proxy-ca.crt" 2>/dev/null
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$PKI/front-proxy-client.key" 2>/dev/null
  openssl req -new -key "$PKI/front-proxy-client.key" -subj "/CN=front-proxy-client" 2>/dev/null |
    openssl x509 -req -CA "$PKI/front-proxy-ca.crt" -CAkey "$PKI/front-proxy-ca.key" -CAcreateserial \
      -days 3650 -sha256 -extfile <(printf '%s\n' "$client") -out "$PKI/front-proxy-client.crt" 2>/dev/null
  # ServiceAccount token signing key pair.
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$PKI/sa.key" 2>/dev/null
  openssl pkey -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
  chmod 600 "$PKI"/*.key
  touch "$PKI/.complete"
  ensure_kubelet_client_cert
  rm -f "$ADMIN_KUBECONFIG" "$KCM_KUBECONFIG" # they embed the old certs
  log "pki: generated in $(elapsed "$t0") ($PKI)"
}

# The apiserver's client certificate towards kubelets (`kubectl logs`, `exec`). Made on its own, so
# a run dir from before it keeps its CA and its ServiceAccount keys.
ensure_kubelet_client_cert() {
  [[ -f "$PKI/apiserver-kubelet-client.crt" && -f "$PKI/apiserver-kubelet-client.key" ]] && return 0
  sign apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" "basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"
  chmod 600 "$PKI/apiserver-kubelet-client.key"
}

# write_kubeconfig <file> <user> <cert name>
write_kubeconfig() {
  local file="$1" user="$2" cert="$3" tmp="$1.tmp.$$"
  cat >"$tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: ghost-e2e
  cluster:
    server: $SERVER
    certificate-authority-data: $(base64 -w0 <"$PKI/ca.crt")
users:
- name: $user
  user:
    client-certificate-data: $(base64 -w0 <"$PKI/$cert.crt")
    client-key-data: $(base64 -w0 <"$PKI/$cert.key")
contexts:
- name: ghost-e2e
  context:
    cluster: ghost-e2e
    user: $user
    namespace: default
current-context: ghost-e2e
EOF
  chmod 600 "$tmp"
  mv -f "$tmp" "$file"
}

ensure_kubeconfigs() {
  # Rewrite when missing or when the apiserver port changed.
  if [[ ! -f "$ADMIN_KUBECONFIG" ]] || ! grep -q "server: $SERVER\$" "$ADMIN_KUBECONFIG"; then
    write_kubeconfig "$ADMIN_KUBECONFIG" admin admin
  fi
  if [[ ! -f "$KCM_KUBECONFIG" ]] || ! grep -q "server: $SERVER\$" "$KCM_KUBECONFIG"; then
    write_kubeconfig "$KCM_KUBECONFIG" system:kube-controller-manager kube-controller-manager
  fi
}

# ---------------------------------------------------------------- components

etcd_healthy() { curl -sf --max-time 2 "http://$HOST:$ETCD_PORT/health" | grep -q '"health":"true"'; }
apiserver_ready() { [[ "$(kubectl_admin get --raw /readyz --request-timeout=3s 2>/dev/null)" == ok ]]; }
kcm_healthy() { [[ "$(curl -sk --max-time 2 "https://$HOST:$KCM_PORT/healthz")" == ok ]]; }
default_sa_exists() { kubectl_admin get serviceaccount default -n default --request-timeout=3s; }

start_etcd() {
  launch etcd \
    --name=ghost-e2e \
    --data-dir="$ETCD_DATA" \
    --listen-client-urls="http://$HOST:$ETCD_PORT" \
    --advertise-client-urls="http://$HOST:$ETCD_PORT" \
    --listen-peer-urls="http://$HOST:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls="http://$HOST:$ETCD_PEER_PORT" \
    --initial-cluster="ghost-e2e=http://$HOST:$ETCD_PEER_PORT" \
    --unsafe-no-fsync=true \
    --log-level=warn
  wait_for etcd "etcd /health" etcd_healthy
}

start_apiserver() {
  # On loopback the apiserver refuses its own address as the `kubernetes` Service's endpoint;
  # on the pod bridge (node.sh) the Service gets it, as in a real cluster.
  local reconciler=lease
  [[ $API_HOST == 127.* ]] && reconciler=none
  launch kube-apiserver \
    --bind-address="$API_HOST" \
    --advertise-address="$API_HOST" \
    --secure-port="$API_PORT" \
    --etcd-servers="http://$HOST:$ETCD_PORT" \
    --authorization-mode=Node,RBAC \
    --client-ca-file="$PKI/ca.crt" \
    --tls-cert-file="$PKI/apiserver.crt" \
    --tls-private-key-file="$PKI/apiserver.key" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$PKI/sa.pub" \
    --service-account-signing-key-file="$PKI/sa.key" \
    --service-cluster-ip-range="$SERVICE_CIDR" \
    --requestheader-client-ca-file="$PKI/front-proxy-ca.crt" \
    --requestheader-allowed-names=front-proxy-client \
    --requestheader-username-headers=X-Remote-User \
    --requestheader-group-headers=X-Remote-Group \
    --requestheader-extra-headers-prefix=X-Remote-Extra- \
    --proxy-client-cert-file="$PKI/front-proxy-client.crt" \
    --proxy-client-key-file="$PKI/front-proxy-client.key" \
    --endpoint-reconciler-type="$reconciler" \
    --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" \
    --kubelet-client-key="$PKI/apiserver-kubelet-client.key" \
    --kubelet-preferred-address-types=InternalIP \
    --allow-privileged=true \
    --profiling=false
  wait_for kube-apiserver "kube-apiserver /readyz" apiserver_ready
}

start_controller_manager() {
  launch kube-controller-manager \
    --bind-address="$HOST" \
    --secure-port="$KCM_PORT" \
    --kubeconfig="$KCM_KUBECONFIG" \
    --authentication-kubeconfig="$KCM_KUBECONFIG" \
    --authorization-kubeconfig="$KCM_KUBECONFIG" \
    --use-service-account-credentials=true \
    --service-account-private-key-file="$PKI/sa.key" \
    --root-ca-file="$PKI/ca.crt" \
    --cluster-signing-cert-file="$PKI/ca.crt" \
    --cluster-signing-key-file="$PKI/ca.key" \
    --controllers="$KCM_CONTROLLERS" \
    --leader-elect=false \
    --profiling=false
  wait_for kube-controller-manager "kube-controller-manager /healthz" kcm_healthy
}

port_of() {
  case "$1" in
    etcd) echo "$ETCD_PORT" ;;
    kube-apiserver) echo "$API_PORT" ;;
    kube-controller-manager) echo "$KCM_PORT" ;;
  esac
}

# step <component> <start function>: start it unless it already runs.
step() {
  local name="$1" fn="$2" t0 pid port
  if pid="$(pid_of "$name")"; then
    log "$name: already running (pid $pid)"
    return 0
  fi
  port="$(port_of "$name")"
  if port_busy "$port"; then
    die "$name: port $port is in use by a process this script did not start ($(ss -ltnpH "sport = :$port" | head -n1))"
  fi
  if [[ "$name" == etcd ]] && port_busy "$ETCD_PEER_PORT"; then
    die "etcd: peer port $ETCD_PEER_PORT is in use by a process this script did not start"
  fi
  t0=$(now_ms)
  "$fn"
  log "$name: started pid $(pid_of "$name") on $HOST:$port in $(elapsed "$t0")"
}

cmd_start() {
  local t_all t0
  t_all=$(now_ms)
  t0=$(now_ms)
  "$HERE/build.sh" || die "build failed"
  log "binaries: ready in $(elapsed "$t0") ($BIN_DIR)"
  mkdir -p "$RUN_DIR" "$LOGS" "$PIDS"
  ensure_pki
  ensure_kubelet_client_cert
  ensure_kubeconfigs
  step etcd start_etcd
  step kube-apiserver start_apiserver
  step kube-controller-manager start_controller_manager
  t0=$(now_ms)
  wait_for kube-controller-manager "ServiceAccount default/default" default_sa_exists
  log "default/default ServiceAccount: present after $(elapsed "$t0")"
  log "cluster up in $(elapsed "$t_all"): $SERVER, KUBECONFIG=$ADMIN_KUBECONFIG"
}

cmd_stop() {
  local i
  for ((i = ${#COMPONENTS[@]} - 1; i >= 0; i--)); do
    stop_one "${COMPONENTS[$i]}"
  done
}

cmd_status() {
  local ok=0 name pid
  for name in "${COMPONENTS[@]}"; do
    if pid="$(pid_of "$name")"; then
      log "$name: running (pid $pid, $HOST:$(port_of "$name"))"
    else
      log "$name: stopped"
      ok=1
    fi
  done
  if [[ -f "$ADMIN_KUBECONFIG" ]] && apiserver_ready; then
    log "readyz: ok ($SERVER)"
  else
    log "readyz: not ready ($SERVER)"
    ok=1
  fi
  return "$ok"
}

cmd_env() {
  printf 'export KUBECONFIG=%q\n' "$ADMIN_KUBECONFIG"
  # shellcheck disable=SC2016 # $PATH is for the shell that evals this
  printf 'export PATH=%q:"$PATH"\n' "$BIN_DIR"
  printf 'export GHOST_K8S_BIN_DIR=%q\n' "$BIN_DIR"
  printf 'export GHOST_K8S_RUN_DIR=%q\n' "$RUN_DIR"
  printf 'export GHOST_K8S_SERVER=%q\n' "$SERVER"
  printf 'export GHOST_K8S_CA=%q\n' "$PKI/ca.crt"
}

cmd_restart_apiserver() {
  local down="${1:-3}"
  [[ "$down" =~ ^[0-9]+$ ]] || die "restart-apiserver: SECONDS must be a whole number, not '$down'"
  stop_one kube-apiserver
  sleep "$down"
  step kube-apiserver start_apiserver
}

cmd_reset() {
  cmd_stop
  # Only delete a dir that looks like ours (guards against GHOST_K8S_RUN_DIR=/).
  if [[ -d "$RUN_DIR" && ! -d "$RUN_DIR/pids" && ! -d "$RUN_DIR/pki" ]]; then
    die "$RUN_DIR does not look like a cluster run dir (no pids/ or pki/): not deleting it"
  fi
  rm -rf "$RUN_DIR"
  log "removed $RUN_DIR"
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  env) cmd_env ;;
  reset) cmd_reset ;;
  restart-apiserver) cmd_restart_apiserver "${2:-3}" ;;
  *)
    echo "usage: $0 {start|stop|status|env|reset|restart-apiserver SECONDS}" >&2
    exit 2
    ;;
esac
