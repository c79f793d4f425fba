#!/usr/bin/env bash
# The whisk-metrics demo: a local OpenWhisk-like stack with live metrics.
#
# Installs what is missing (scripts/setup.sh), builds the example actions, the collector, the
# gateway and the emulator, starts a tansu Kafka broker, two Pushgateway shards, whisk-gateway in
# front of them (authenticating every push with the action's API key against the emulator's
# controller endpoint), Prometheus (with dashboards/prometheus/prometheus.yml) and the collector on
# loopback, then runs the invoker emulator with a load that cold-starts, reuses, freezes and kills
# containers, printing a live per-action table. The actions push through the gateway.
#
#   scripts/demo.sh [--duration SECONDS] [--rate PER_SECOND] [--keep]
#
# Ctrl-C or the end of --duration (default 300) stops the load and everything the demo started;
# --keep leaves broker, Pushgateways, gateway, Prometheus and collector running for exploring (the
# script prints how to stop them). Ports: 9092 broker, 9091 and 9093 Pushgateways, 9096 gateway,
# 3233 controller (served by the emulator), 9090 Prometheus, 9095 collector, or free ones when
# those are taken.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

duration=300
rate=15
keep=0
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) duration=${2:?--duration needs a number of seconds}; shift 2 ;;
    --duration=*) duration=${1#*=}; shift ;;
    --rate) rate=${2:?--rate needs a number}; shift 2 ;;
    --rate=*) rate=${1#*=}; shift ;;
    --keep) keep=1; shift ;;
    -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "demo.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
case "$duration" in ''|*[!0-9]*) echo "demo.sh: --duration must be whole seconds, got '$duration'" >&2; exit 2 ;; esac

log() { printf '\033[1m[demo]\033[0m %s\n' "$*" >&2; }

scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"

log "building the example actions, the collector, the gateway and the emulator (release)"
cargo build --release --locked -p whisk-actions -p whisk-collector -p whisk-gateway -p whisk-emulator
BIN="$ROOT/target/release"

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
pick_port() {
  if port_free "$1"; then echo "$1"; else
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
  fi
}
wait_http() { # url, name
  for _ in $(seq 1 200); do
    if python3 -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=1)" "$1" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  log "$2 did not come up; its log: $STACK/$2.log"; tail -n 20 "$STACK/$2.log" >&2; return 1
}

KAFKA_PORT=$(pick_port 9092)
PGW_PORT=$(pick_port 9091)
PGW2_PORT=$(pick_port 9093)
GW_PORT=$(pick_port 9096)
CTRL_PORT=$(pick_port 3233)
PROM_PORT=$(pick_port 9090)
COLLECTOR_PORT=$(pick_port 9095)
STACK="$ROOT/.stack"
rm -rf "$STACK"
mkdir -p "$STACK"
pids=()

cleanup() {
  if [ "$keep" = 1 ]; then
    echo "${pids[*]}" > "$STACK/pids"
    log "stack left running (--keep). Stop it with: kill \$(cat $STACK/pids)"
    return
  fi
  log "stopping the stack"
  # Newest first: the collector's final push and the gateway's last forwards still find the
  # Pushgateways and the broker.
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill "${pids[$i]}" 2>/dev/null || true
    wait "${pids[$i]}" 2>/dev/null || true
  done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "tansu broker on 127.0.0.1:$KAFKA_PORT"
tansu broker --listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
  --advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
  --storage-engine memory://tansu/ >"$STACK/tansu.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 200); do port_free "$KAFKA_PORT" || break; sleep 0.1; done
tansu topic create events --broker "tcp://127.0.0.1:$KAFKA_PORT" --partitions 2 >>"$STACK/tansu.log" 2>&1

shard=0
for port in "$PGW_PORT" "$PGW2_PORT"; do
  log "Pushgateway shard $shard on 127.0.0.1:$port"
  prometheus-pushgateway --web.listen-address="127.0.0.1:$port" \
    --push.disable-consistency-check --persistence.file= >"$STACK/pushgateway$shard.log" 2>&1 &
  pids+=($!)
  wait_http "http://127.0.0.1:$port/-/ready" "pushgateway$shard"
  shard=$((shard + 1))
done

log "whisk-gateway on 127.0.0.1:$GW_PORT (API keys checked against http://127.0.0.1:$CTRL_PORT)"
"$BIN/whisk-gateway" --listen "127.0.0.1:$GW_PORT" --auth api-key \
  --openwhisk-api-host "http://127.0.0.1:$CTRL_PORT" \
  --pushgateway-url "http://127.0.0.1:$PGW_PORT" --pushgateway-url "http://127.0.0.1:$PGW2_PORT" \
  --log-level warn >"$STACK/gateway.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$GW_PORT/readyz" gateway

log "collector on 127.0.0.1:$COLLECTOR_PORT"
"$BIN/whisk-collector" --brokers "127.0.0.1:$KAFKA_PORT" --listen "127.0.0.1:$COLLECTOR_PORT" \
  --pushgateway-url "http://127.0.0.1:$PGW_PORT" --pushgateway-url "http://127.0.0.1:$PGW2_PORT" \
  --push-interval 5s --instance demo \
  --prune-after 2m --prune-interval 30s --log-level warn >"$STACK/collector.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$COLLECTOR_PORT/healthz" collector

log "Prometheus on 127.0.0.1:$PROM_PORT"
sed -e "s/'localhost:9091'\] # PUSHGATEWAY_TARGET/'127.0.0.1:$PGW_PORT', '127.0.0.1:$PGW2_PORT'] # PUSHGATEWAY_TARGET/" \
    -e "s/'localhost:9096'\] # GATEWAY_TARGET/'127.0.0.1:$GW_PORT'] # GATEWAY_TARGET/" \
    -e "s/'localhost:9095'\] # COLLECTOR_TARGET/'127.0.0.1:$COLLECTOR_PORT'] # COLLECTOR_TARGET/" \
    dashboards/prometheus/prometheus.yml >"$STACK/prometheus.yml"
cp dashboards/prometheus/rules.yml "$STACK/rules.yml" # rule_files is relative to the config
prometheus --config.file="$STACK/prometheus.yml" --storage.tsdb.path="$STACK/prometheus-data" --enable-feature=exemplar-storage \
  --web.listen-address="127.0.0.1:$PROM_PORT" >"$STACK/prometheus.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$PROM_PORT/-/ready" prometheus

cat >&2 <<EOF

  Prometheus   http://127.0.0.1:$PROM_PORT/graph
  Gateway      http://127.0.0.1:$GW_PORT/metrics   (the actions push here with their API key; its own metrics)
  Controller   http://127.0.0.1:$CTRL_PORT/api/v1/namespaces   (served by the emulator during the load)
  Pushgateways http://127.0.0.1:$PGW_PORT/ http://127.0.0.1:$PGW2_PORT/   (SDK groups: job=openwhisk_actions, one per container, sharded by instance)
  Collector    http://127.0.0.1:$COLLECTOR_PORT/metrics
  Logs         $STACK/*.log

  Try in Prometheus:
    sum by (action) (rate(openwhisk_action_activations_total[1m]))            platform activations/s
    sum by (action, status) (openwhisk_action_status)                         outcomes
    count by (action) (time() - whisk_last_activation_time_seconds < 60)      containers in use
    sum by (action, status) (whisk_activations_total)                         the SDK's own counts
    sum by (region) (orders_placed_total)                                     a custom business metric
    histogram_quantile(0.95, sum by (le, action) (rate(openwhisk_action_duration_seconds_bucket[1m])))
    sum by (result, reason) (rate(whisk_gateway_requests_total[1m]))          the gateway's answers

EOF

log "load for ${duration}s at ${rate}/s with bursts (Ctrl-C stops)"
set +e
"$BIN/whisk-emulator" run --brokers "127.0.0.1:$KAFKA_PORT" \
  --pushgateway-url "http://127.0.0.1:$GW_PORT" --controller-port "$CTRL_PORT" \
  --init-param WHISK_METRICS_AUTH=api-key \
  --action hello="$BIN/hello" --action orders="$BIN/orders" --action flaky="$BIN/flaky" \
  --action-timeout flaky=1s --mix hello=3,orders=3,flaky=1 \
  --rate "$rate" --duration "${duration}s" --burst-every 20s --burst-size 40 --idle-timeout 15s
status=$?
set -e
log "load finished (exit $status)"
exit "$status"
