#!/usr/bin/env bash
# A real node beside the control plane: containerd (Debian's, with runc and the CNI plugins),
# kubelet, kube-proxy and kube-scheduler (built from e2e/k8s/go.mod), pods on a bridge of their
# own. Pods run the images of e2e/k8s/image.sh; nothing is pulled.
#
# Usage: e2e/k8s/node.sh {start|stop|status|env|reset|restart-apiserver SECONDS}
#
#   start   make the bridge and its rules, start the control plane with the apiserver on the
#           bridge (cluster.sh, own run dir), then containerd, the pause and ghost images
#           imported, kubelet, kube-proxy, kube-scheduler; wait until the node is Ready
#   stop    stop exactly the processes named by the pid files (scheduler, proxy, kubelet,
#           containerd, then the control plane), remove the pods' containers, the bridge and
#           every rule this script or kube-proxy added
#   status  each component; exit 0 only if all run and the node is Ready
#   env     `export` lines: cluster.sh's (KUBECONFIG, PATH, GHOST_K8S_*) plus GHOST_NODE_*
#   reset   stop, then delete the node's state and the control plane's run dir
#   restart-apiserver SECONDS
#           the node's kube-apiserver down for SECONDS, then up again (cluster.sh's, on the
#           node's control plane: the journeys' API server restart)
#
# The network: the bridge ghost0 holds $GHOST_NODE_BRIDGE_IP/24 (10.244.0.1); pods get
# addresses in that /24 (host-local IPAM), the apiserver listens on the bridge address and is
# the `kubernetes` Service's endpoint, Services are 10.96.0.0/16 (kube-proxy, iptables). The
# chain GHOST-NODE, first in FORWARD, accepts traffic within the bridge and drops anything that
# would leave it for another interface or enter it from one: no pod traffic leaves this machine.
# The test databases are reached from pods on the bridge address: a relay (socat, one per port
# in GHOST_NODE_DB_PORTS) listens there and forwards to the server on 127.0.0.1, because MariaDB
# 10.11 binds one address only (several arrive in 11.x) and the servers' users are
# 'ghost'@'127.0.0.1'. Servers keep listening on loopback only.
#
# Environment (defaults in brackets):
#   GHOST_CACHE_DIR          cache root [$HOME/.cache/ghost]
#   GHOST_NODE_DIR           node state [$GHOST_CACHE_DIR/k8s/node]
#   GHOST_NODE_BRIDGE_IP     the bridge's address; the pods' /24 around it [10.244.0.1]
#   GHOST_NODE_KUBELET_PORT  kubelet's port on the bridge address [20250]; its healthz, kube-proxy's
#                            and kube-scheduler's ports follow it on 127.0.0.1 (-2, +6, +9, +10)
#   GHOST_NODE_APISERVER_PORT, GHOST_NODE_ETCD_PORT, GHOST_NODE_ETCD_PEER_PORT, GHOST_NODE_KCM_PORT
#                            the node's control plane [26444, 22389, 22390, 26258]: not the
#                            loopback cluster's, so both can run
#   GHOST_NODE_CLUSTER_DIR   its run dir [$GHOST_CACHE_DIR/k8s/node-run]
#   GHOST_NODE_IMAGES        0: do not import the images (they are imported when present) [1]
#   GHOST_NODE_DB_PORTS      database ports relayed from the bridge address to 127.0.0.1
#                            [23306 23307 23308 23326 23327 23316 23317: each topology's primary and
#                            replica, and MariaDB 10.11's TLS-only server]
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE_DIR="${GHOST_CACHE_DIR:-${HOME:-/root}/.cache/ghost}"
export GHOST_CACHE_DIR="$CACHE_DIR"
NODE_DIR="${GHOST_NODE_DIR:-$CACHE_DIR/k8s/node}"
BRIDGE=ghost0
BRIDGE_IP="${GHOST_NODE_BRIDGE_IP:-10.244.0.1}"
POD_CIDR="${BRIDGE_IP%.*}.0/24"
SERVICE_CIDR=10.96.0.0/16
KUBELET_PORT="${GHOST_NODE_KUBELET_PORT:-20250}"
NODE_NAME=ghost-e2e-node
CHAIN=GHOST-NODE
STOP_TIMEOUT=30
START_TIMEOUT=120

# The control plane this node joins: its own run dir (the Service range differs from the
# loopback-only cluster's), its own ports (both may run at once), its apiserver on the bridge.
export GHOST_K8S_RUN_DIR="${GHOST_NODE_CLUSTER_DIR:-$CACHE_DIR/k8s/node-run}"
export GHOST_K8S_SERVICE_CIDR="$SERVICE_CIDR"
export GHOST_K8S_APISERVER_HOST="$BRIDGE_IP"
export GHOST_K8S_APISERVER_PORT="${GHOST_NODE_APISERVER_PORT:-26444}"
export GHOST_K8S_ETCD_PORT="${GHOST_NODE_ETCD_PORT:-22389}"
export GHOST_K8S_ETCD_PEER_PORT="${GHOST_NODE_ETCD_PEER_PORT:-22390}"
export GHOST_K8S_KCM_PORT="${GHOST_NODE_KCM_PORT:-26258}"
CLUSTER_RUN_DIR="$GHOST_K8S_RUN_DIR"
CLUSTER_PKI="$CLUSTER_RUN_DIR/pki"
API_SERVER="https://$BRIDGE_IP:$GHOST_K8S_APISERVER_PORT"

BIN_DIR="$("$HERE/build.sh" --print-dir)"
LOGS="$NODE_DIR/logs"
PIDS="$NODE_DIR/pids"
PKI="$NODE_DIR/pki"
# containerd's sockets and state must be on a short path (unix socket names are limited).
RUN_STATE=/run/ghost-node
CONTAINERD_SOCK="$RUN_STATE/containerd.sock"
COMPONENTS=(containerd kubelet kube-proxy kube-scheduler) # start order
DB_PORTS="${GHOST_NODE_DB_PORTS:-23306 23307 23308 23326 23327 23316 23317}"
PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

log() { printf 'node: %s\n' "$*"; }
die() {
  printf 'node: ERROR: %s\n' "$*" >&2
  exit 1
}
kubectl_admin() { "$BIN_DIR/kubectl" --kubeconfig="$CLUSTER_RUN_DIR/admin.kubeconfig" "$@"; }
# shellcheck source=../lib/processes.sh
source "$HERE/../lib/processes.sh"
ctr_k8s() { ctr --address "$CONTAINERD_SOCK" --namespace k8s.io "$@"; }

binary_of() {
  case $1 in
  containerd) command -v containerd ;;
  relay-*) command -v socat ;;
  *) echo "$BIN_DIR/$1" ;;
  esac
}

# ---------------------------------------------------------------- network

bridge_up() {
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    # The pods' range must be free: a machine address in it would route pod traffic there.
    if ip -4 addr show | grep -v " $BRIDGE\$" | grep -q "inet ${BRIDGE_IP%.*}\."; then
      die "the pod range $POD_CIDR is used by an interface of this machine; set GHOST_NODE_BRIDGE_IP"
    fi
    ip link add "$BRIDGE" type bridge
  fi
  ip addr show dev "$BRIDGE" | grep -q "inet $BRIDGE_IP/24" || ip addr add "$BRIDGE_IP/24" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  # Pod traffic stays on the bridge: anything forwarded to or from another interface is dropped.
  iptables -N "$CHAIN" 2>/dev/null || iptables -F "$CHAIN"
  iptables -A "$CHAIN" -i "$BRIDGE" -o "$BRIDGE" -j ACCEPT
  iptables -A "$CHAIN" -i "$BRIDGE" -j DROP
  iptables -A "$CHAIN" -o "$BRIDGE" -j DROP
  iptables -C FORWARD -j "$CHAIN" 2>/dev/null || iptables -I FORWARD 1 -j "$CHAIN"
}

bridge_down() {
  while iptables -C FORWARD -j "$CHAIN" 2>/dev/null; do iptables -D FORWARD -j "$CHAIN"; done
  iptables -F "$CHAIN" 2>/dev/null || true
  iptables -X "$CHAIN" 2>/dev/null || true
  # kube-proxy's chains (it is stopped by now): its --cleanup removes exactly what it made.
  if [[ -x "$BIN_DIR/kube-proxy" ]]; then
    "$BIN_DIR/kube-proxy" --cleanup --v=0 >>"$LOGS/kube-proxy.log" 2>&1 || true
  fi
  # The kubelet's own chains (it has no cleanup of its own; they exist only while a kubelet runs).
  local table chain
  for table in filter nat mangle; do
    for chain in INPUT OUTPUT; do
      while iptables -t "$table" -C "$chain" -j KUBE-FIREWALL 2>/dev/null; do
        iptables -t "$table" -D "$chain" -j KUBE-FIREWALL
      done
    done
    for chain in KUBE-FIREWALL KUBE-KUBELET-CANARY KUBE-IPTABLES-HINT; do
      if iptables -t "$table" -F "$chain" 2>/dev/null; then
        iptables -t "$table" -X "$chain" 2>/dev/null || true
      fi
    done
  done
  # Pods' veths vanish with their network namespaces; the bridge goes last.
  if ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link set "$BRIDGE" down || true
    ip link del "$BRIDGE" || true
  fi
}

# ---------------------------------------------------------------- certificates and configs

sign_client() { # sign_client <name> <subject>
  local name=$1 subj=$2
  [[ -f "$PKI/$name.crt" && -f "$PKI/$name.key" ]] && return 0
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$PKI/$name.key" 2>/dev/null
  openssl req -new -key "$PKI/$name.key" -subj "$subj" 2>/dev/null |
    openssl x509 -req -CA "$CLUSTER_PKI/ca.crt" -CAkey "$CLUSTER_PKI/ca.key" -CAcreateserial \
      -days 3650 -sha256 -out "$PKI/$name.crt" \
      -extfile <(printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n') 2>/dev/null
  chmod 600 "$PKI/$name.key"
}

kubeconfig_for() { # kubeconfig_for <cert name> <user>
  local name=$1 user=$2
  write_file "$NODE_DIR/$name.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: ghost-e2e
  cluster:
    server: $API_SERVER
    certificate-authority: $CLUSTER_PKI/ca.crt
users:
- name: $user
  user:
    client-certificate: $PKI/$name.crt
    client-key: $PKI/$name.key
contexts:
- name: ghost-e2e
  context: {cluster: ghost-e2e, user: $user}
current-context: ghost-e2e
EOF
  chmod 600 "$NODE_DIR/$name.kubeconfig"
}

# write_file FILE <<EOF: replaces FILE only when its content changes, and then in one rename.
# kube-proxy exits when its --config file changes under it ("content of the proxy server's
# configuration file was updated"), so a `start` of a running node must not rewrite it, not even
# with the same text (a truncating write shows it empty first).
write_file() {
  local tmp="$1.tmp.$$"
  cat >"$tmp"
  if cmp -s "$tmp" "$1"; then
    rm -f "$tmp"
  else
    mv -f "$tmp" "$1"
  fi
}

write_configs() {
  mkdir -p "$PKI" "$NODE_DIR/cni" "$NODE_DIR/cni-ipam" "$NODE_DIR/kubelet" "$NODE_DIR/containerd"
  chmod 700 "$PKI"
  # A CA change (cluster reset) invalidates the node's certificates.
  if [[ -f "$PKI/ca.sha256" && "$(cat "$PKI/ca.sha256")" != "$(sha256sum <"$CLUSTER_PKI/ca.crt")" ]]; then
    rm -f "$PKI"/*.crt "$PKI"/*.key
  fi
  sha256sum <"$CLUSTER_PKI/ca.crt" >"$PKI/ca.sha256"
  sign_client kubelet "/O=system:nodes/CN=system:node:$NODE_NAME"
  sign_client kube-proxy "/CN=system:kube-proxy"
  sign_client kube-scheduler "/CN=system:kube-scheduler"
  kubeconfig_for kubelet "system:node:$NODE_NAME"
  kubeconfig_for kube-proxy system:kube-proxy
  kubeconfig_for kube-scheduler system:kube-scheduler

  write_file "$NODE_DIR/containerd/config.toml" <<EOF
version = 2
root = "$NODE_DIR/containerd/root"
state = "$RUN_STATE/state"
disabled_plugins = ["io.containerd.internal.v1.tracing", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "$CONTAINERD_SOCK"
[ttrpc]
  address = "$RUN_STATE/containerd.ttrpc.sock"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.10"
  # The sandbox's bounding set lacks CAP_SYS_RESOURCE: an oom_score_adj below the caller's fails.
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$NODE_DIR/cni"
EOF

  write_file "$NODE_DIR/cni/10-ghost.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "ghost",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$BRIDGE",
      "isGateway": true,
      "isDefaultGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$BRIDGE_IP"}]],
        "dataDir": "$NODE_DIR/cni-ipam"
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF

  write_file "$NODE_DIR/kubelet/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $BRIDGE_IP
port: $KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $((KUBELET_PORT - 2))
cgroupDriver: cgroupfs
failSwapOn: false
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: $CLUSTER_PKI/ca.crt}
authorization: {mode: AlwaysAllow}
# No DNS for pods: they reach the apiserver and the databases by address, nothing else. The
# cluster DNS address is a Service address nothing answers on (it spares every pod a warning).
resolvConf: ""
clusterDomain: cluster.local
clusterDNS: ["${SERVICE_CIDR%.*.*}.0.10"]
# Only imported images exist: never collect them, never evict for a full disk of others' files.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
serializeImagePulls: false
podCIDR: $POD_CIDR
maxPods: 60
EOF

  write_file "$NODE_DIR/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clusterCIDR: $POD_CIDR
hostnameOverride: $NODE_NAME
# The node's address; NodePorts only there, and no route_localnet change for localhost NodePorts.
bindAddress: $BRIDGE_IP
nodePortAddresses: ["$BRIDGE_IP/32"]
iptables: {localhostNodePorts: false}
healthzBindAddress: 127.0.0.1:$((KUBELET_PORT + 6))
metricsBindAddress: 127.0.0.1:$((KUBELET_PORT + 9))
clientConnection: {kubeconfig: $NODE_DIR/kube-proxy.kubeconfig}
# Leave the machine's conntrack sysctls alone.
conntrack: {maxPerCore: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF
}

# ---------------------------------------------------------------- components

containerd_ready() { ctr --address "$CONTAINERD_SOCK" version; }
node_ready() {
  [[ "$(kubectl_admin get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' --request-timeout=3s)" == True ]]
}
healthz() { curl -sf --max-time 2 -o /dev/null "$1"; }

start_containerd() {
  mkdir -p "$RUN_STATE"
  launch containerd --config "$NODE_DIR/containerd/config.toml"
  wait_for containerd "containerd's socket" containerd_ready
}

# The images pods run, imported from image.sh's archives (an unchanged image is skipped).
import_images() {
  [[ "${GHOST_NODE_IMAGES:-1}" == 1 ]] || return 0
  local name archive
  for name in pause ghost; do
    archive="$("$HERE/image.sh" archive "$name")"
    if [[ ! -f "$archive" ]]; then
      [[ $name == ghost ]] && {
        log "no ghost image yet ($archive): run e2e/k8s/image.sh build"
        continue
      }
      die "no $name image ($archive): run e2e/k8s/image.sh build"
    fi
    local stamp="$NODE_DIR/$name.imported"
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$(stat -c %Y-%s "$archive")" ]] &&
      ctr_k8s images ls -q | grep -q .; then
      continue
    fi
    local t0
    t0=$(now_ms)
    ctr_k8s images import --all-platforms "$archive" >/dev/null
    stat -c %Y-%s "$archive" >"$stamp"
    log "$name image: imported in $(elapsed "$t0")"
  done
}

start_kubelet() {
  launch kubelet \
    --config="$NODE_DIR/kubelet/config.yaml" \
    --kubeconfig="$NODE_DIR/kubelet.kubeconfig" \
    --root-dir="$NODE_DIR/kubelet/root" \
    --cert-dir="$NODE_DIR/kubelet/pki" \
    --hostname-override="$NODE_NAME" \
    --node-ip="$BRIDGE_IP" \
    --v=1
  wait_for kubelet "node $NODE_NAME Ready" node_ready
}

start_kube_proxy() {
  launch kube-proxy --config="$NODE_DIR/kube-proxy.yaml" --v=1
  wait_for kube-proxy "kube-proxy /healthz" healthz "http://127.0.0.1:$((KUBELET_PORT + 6))/healthz"
}

start_scheduler() {
  launch kube-scheduler \
    --kubeconfig="$NODE_DIR/kube-scheduler.kubeconfig" \
    --authentication-kubeconfig="$NODE_DIR/kube-scheduler.kubeconfig" \
    --authorization-kubeconfig="$NODE_DIR/kube-scheduler.kubeconfig" \
    --bind-address=127.0.0.1 \
    --secure-port=$((KUBELET_PORT + 9 + 1)) \
    --leader-elect=false \
    --v=1
  wait_for kube-scheduler "kube-scheduler /healthz" healthz_tls "https://127.0.0.1:$((KUBELET_PORT + 10))/healthz"
}
healthz_tls() { [[ "$(curl -sk --max-time 2 "$1")" == ok ]]; }

# One relay per database port: the bridge address to the server on loopback (see the header).
start_relays() {
  local port name
  for port in $DB_PORTS; do
    name="relay-$port"
    pid_of "$name" >/dev/null && continue
    launch "$name" -d "TCP-LISTEN:$port,bind=$BRIDGE_IP,reuseaddr,fork" "TCP:127.0.0.1:$port"
  done
  log "database relays: $BRIDGE_IP:{${DB_PORTS// /,}} -> 127.0.0.1"
}

stop_relays() {
  local f
  for f in "$PIDS"/relay-*.pid; do
    [[ -e "$f" ]] || continue
    f="$(basename "$f" .pid)"
    stop_one "$f" group
  done
}

step() {
  local name="$1" fn="$2" t0 pid
  if pid="$(pid_of "$name")"; then
    log "$name: already running (pid $pid)"
    return 0
  fi
  t0=$(now_ms)
  "$fn"
  log "$name: started pid $(pid_of "$name") in $(elapsed "$t0")"
}

cmd_start() {
  local t_all
  t_all=$(now_ms)
  [[ $EUID == 0 ]] || die "the node needs root (containerd, iptables, the bridge)"
  local tool
  for tool in containerd runc ctr iptables ip socat; do
    command -v "$tool" >/dev/null || die "$tool not found (apt-get install containerd runc containernetworking-plugins iptables iproute2 socat)"
  done
  [[ -x /usr/lib/cni/bridge ]] || die "the CNI plugins are missing (apt-get install containernetworking-plugins)"
  "$HERE/build.sh" || die "build failed"
  mkdir -p "$NODE_DIR" "$LOGS" "$PIDS"
  bridge_up
  "$HERE/cluster.sh" start
  write_configs
  step containerd start_containerd
  import_images
  step kubelet start_kubelet
  step kube-proxy start_kube_proxy
  step kube-scheduler start_scheduler
  start_relays
  log "node $NODE_NAME Ready in $(elapsed "$t_all"): pods on $BRIDGE ($POD_CIDR), apiserver $API_SERVER"
}

# Pod sandboxes and containers outlive containerd (their shims keep running): stop them through
# the CRI while containerd still runs, so no process of ours is left.
remove_pods() {
  containerd_ready >/dev/null 2>&1 || return 0
  local ids
  ids="$(ctr_k8s containers ls -q 2>/dev/null || true)"
  [[ -z "$ids" ]] && return 0
  local id
  for id in $(ctr_k8s tasks ls -q 2>/dev/null); do
    ctr_k8s tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true
  done
  sleep 1
  for id in $ids; do
    ctr_k8s tasks delete -f "$id" >/dev/null 2>&1 || true
    ctr_k8s containers delete "$id" >/dev/null 2>&1 || true
  done
  log "removed $(wc -w <<<"$ids") containers"
}

cmd_stop() {
  stop_relays
  stop_one kube-scheduler
  stop_one kube-proxy
  stop_one kubelet
  remove_pods
  stop_one containerd
  "$HERE/cluster.sh" stop
  # Mounts the kubelet and containerd left (pod volumes, sandboxes' shm, overlay rootfs).
  local m
  while read -r m; do
    umount -l "$m" 2>/dev/null || true
  done < <(awk -v a="$NODE_DIR/" -v b="$RUN_STATE/" 'index($2, a) == 1 || index($2, b) == 1 {print $2}' /proc/mounts | sort -r)
  bridge_down
  log "stopped"
}

cmd_status() {
  local ok=0 name pid
  for name in "${COMPONENTS[@]}"; do
    if pid="$(pid_of "$name")"; then
      log "$name: running (pid $pid)"
    else
      log "$name: stopped"
      ok=1
    fi
  done
  "$HERE/cluster.sh" status || ok=1
  if node_ready; then log "node $NODE_NAME: Ready"; else
    log "node $NODE_NAME: not Ready"
    ok=1
  fi
  return "$ok"
}

cmd_env() {
  "$HERE/cluster.sh" env
  printf 'export GHOST_NODE_BRIDGE_IP=%q\n' "$BRIDGE_IP"
  printf 'export GHOST_NODE_NAME=%q\n' "$NODE_NAME"
  printf 'export GHOST_NODE_IMAGE=%q\n' "$("$HERE/image.sh" print-tag)"
}

cmd_reset() {
  cmd_stop
  if [[ -d "$NODE_DIR" && ! -d "$NODE_DIR/pids" ]]; then
    die "$NODE_DIR does not look like a node dir (no pids/): not deleting it"
  fi
  rm -rf "$NODE_DIR" "$RUN_STATE"
  "$HERE/cluster.sh" reset
}

case "${1:-}" in
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
env) cmd_env ;;
reset) cmd_reset ;;
restart-apiserver) "$HERE/cluster.sh" restart-apiserver "${2:-}" ;;
*)
  echo "usage: $0 {start|stop|status|env|reset|restart-apiserver SECONDS}" >&2
  exit 2
  ;;
esac
