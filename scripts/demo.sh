#!/usr/bin/env bash
# The whisk-metrics demo: a local OpenWhisk-like stack with live metrics.
#
# Installs what the demo needs and is missing (scripts/setup.sh demo), builds what the demo runs
# (the example actions, the collector, the gateway, the emulator and the embedded broker) with the
# quick-to-build `demo` profile, starts a Kafka-protocol broker, two Pushgateway shards,
# whisk-gateway in front of them (authenticating every push with the action's API key against the
# emulator's controller endpoint), Prometheus (dashboards/prometheus/prometheus.yml) and the
# collector on loopback, then runs the invoker emulator with a load that cold-starts, reuses,
# freezes and kills containers, printing a live per-action table. The actions push through the
# gateway. At the end it checks that the collector consumed every event the emulator delivered.
#
#   scripts/demo.sh [--duration SECONDS] [--rate PER_SECOND] [--keep]
#                   [--broker embedded|tansu] [--brokers HOST:PORT]
#                   [--backend pushgateway|remote-write]
#
# Backends: `pushgateway` (default) as above. `remote-write`: no Pushgateway and no janitor;
# Prometheus is the store, a remote-write receiver (--web.enable-remote-write-receiver, exemplar
# storage on) that whisk-gateway and the collector write into (docs/design.md "Remote-write
# backend"); the live table and the printed queries work the same.
#
# Brokers: `embedded` (default) is librdkafka's mock cluster in whisk-embedded-broker: nothing to
# install, in memory, and it keeps at most 5 MiB or 100 000 message sets per partition, so the
# demo refuses a --rate x --duration beyond what it holds (see README). `tansu` runs the tansu
# broker (installed by scripts/setup.sh tansu when missing: a ~15-20 min build, once per machine).
# --brokers HOST:PORT uses a Kafka you run, whose topic `events` must exist or be auto-created.
#
# Ctrl-C or the end of --duration (default 300) stops the load and everything the demo started;
# --keep leaves broker, Pushgateways, gateway, Prometheus and collector running for exploring (the
# script prints how to stop them). Ports: 9092 tansu, 9091 and 9093 Pushgateways, 9096 gateway,
# 3233 controller (served by the emulator), 9090 Prometheus, 9095 collector, or free ones when
# those are taken; the embedded broker takes a free port and prints it.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

duration=300
rate=15
keep=0
broker=embedded
brokers=""
backend=pushgateway
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) duration=${2:?--duration needs a number of seconds}; shift 2 ;;
    --duration=*) duration=${1#*=}; shift ;;
    --rate) rate=${2:?--rate needs a number}; shift 2 ;;
    --rate=*) rate=${1#*=}; shift ;;
    --keep) keep=1; shift ;;
    --broker) broker=${2:?--broker needs embedded or tansu}; shift 2 ;;
    --broker=*) broker=${1#*=}; shift ;;
    --brokers) brokers=${2:?--brokers needs HOST:PORT}; broker=external; shift 2 ;;
    --brokers=*) brokers=${1#*=}; broker=external; shift ;;
    --backend) backend=${2:?--backend needs pushgateway or remote-write}; shift 2 ;;
    --backend=*) backend=${1#*=}; shift ;;
    -h|--help) sed -n '2,32p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "demo.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
case "$duration" in ''|*[!0-9]*) echo "demo.sh: --duration must be whole seconds, got '$duration'" >&2; exit 2 ;; esac
case "$rate" in ''|*[!0-9.]*|*.*.*|.) echo "demo.sh: --rate must be a number, got '$rate'" >&2; exit 2 ;; esac
case "$broker" in embedded|tansu|external) ;; *) echo "demo.sh: --broker must be embedded or tansu (or give --brokers HOST:PORT), got '$broker'" >&2; exit 2 ;; esac
case "$backend" in pushgateway|remote-write) ;; *) echo "demo.sh: --backend must be pushgateway or remote-write, got '$backend'" >&2; exit 2 ;; esac

# The load: --rate per second plus a burst of BURST_SIZE every BURST_EVERY seconds.
BURST_SIZE=40
BURST_EVERY=20
# Partitions of `events` (created by the demo on the embedded broker and on tansu).
PARTITIONS=4

# What the embedded broker holds. librdkafka's mock keeps at most 5 MiB (5 242 880 bytes) or
# 100 000 message sets per partition and silently drops the oldest beyond that. Measured on the
# mock (docs/benchmarks.md, "Demo"): 2.00 events per activation (the Activation event and a
# ConcurrentInvocations metric), payloads of at most 357 bytes; stored as one record batch each
# at worst (61-byte batch header plus the record's own fields) that is at most 450 bytes. The
# demo refuses a load whose events would not all fit even if the collector read none of them,
# with 20 % margin for an uneven spread over the partitions (measured: within 7 %).
EVENTS_PER_ACTIVATION_X100=200
EVENT_BYTES=450
embedded_max_activations() {
  local per_partition_events=$((5242880 / EVENT_BYTES))
  [ "$per_partition_events" -le 100000 ] || per_partition_events=100000
  echo $((PARTITIONS * per_partition_events * 80 / EVENTS_PER_ACTIVATION_X100))
}
if [ "$broker" = embedded ]; then
  max_activations=$(embedded_max_activations)
  planned=$(python3 -c "import sys; r,d,b,e=map(float,sys.argv[1:]); print(int(r*d + b*(d//e) + b))" \
    "$rate" "$duration" "$BURST_SIZE" "$BURST_EVERY")
  if [ "$planned" -gt "$max_activations" ]; then
    max_duration=$(python3 -c "import sys; m,r,b,e=map(float,sys.argv[1:]); print(max(0,int((m-b)/(r+b/e))))" \
      "$max_activations" "$rate" "$BURST_SIZE" "$BURST_EVERY")
    cat >&2 <<EOF
demo.sh: --rate $rate for --duration $duration plans about $planned activations; the embedded
broker (librdkafka's mock, in memory, at most 5 MiB per partition on $PARTITIONS partitions) holds
the events of about $max_activations. At --rate $rate keep --duration at or below $max_duration,
or run the demo on a real broker: --broker tansu, or --brokers HOST:PORT.
EOF
    exit 2
  fi
fi

log() { printf '\033[1m[demo]\033[0m %s\n' "$*" >&2; }

if [ "$broker" = tansu ]; then scripts/setup.sh demo tansu; else scripts/setup.sh demo; fi
export PATH="$HOME/.cargo/bin:$PATH"

# Only what the demo runs, with the `demo` profile (Cargo.toml): quick to build, fast enough for
# a demo's load (docs/benchmarks.md, "Demo").
packages=(-p whisk-actions -p whisk-collector -p whisk-gateway -p whisk-emulator)
[ "$broker" = embedded ] && packages+=(-p whisk-embedded-broker)
what="the example actions, the collector, the gateway and the emulator"
[ "$broker" = embedded ] && what="the example actions, the collector, the gateway, the emulator and the embedded broker"
log "building $what (profile demo)"
cargo build --profile demo --locked --bins "${packages[@]}"
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/demo"

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

case "$broker" in
  embedded)
    "$BIN/whisk-embedded-broker" --topic events --partitions "$PARTITIONS" --group whisk-collector \
      --address-file "$STACK/broker.address" >"$STACK/broker.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 1 100); do [ -s "$STACK/broker.address" ] && break; sleep 0.1; done
    if [ ! -s "$STACK/broker.address" ]; then
      log "the embedded broker did not start; its log: $STACK/broker.log"; tail -n 20 "$STACK/broker.log" >&2; exit 1
    fi
    KAFKA=$(cat "$STACK/broker.address")
    log "embedded broker (librdkafka mock, in memory) on $KAFKA, topic events with $PARTITIONS partitions"
    ;;
  tansu)
    KAFKA_PORT=$(pick_port 9092)
    KAFKA="127.0.0.1:$KAFKA_PORT"
    log "tansu broker on $KAFKA"
    tansu broker --listener-url "tcp://$KAFKA" --advertised-listener-url "tcp://$KAFKA" \
      --storage-engine memory://tansu/ >"$STACK/tansu.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 1 200); do port_free "$KAFKA_PORT" || break; sleep 0.1; done
    tansu topic create events --broker "tcp://$KAFKA" --partitions "$PARTITIONS" >>"$STACK/tansu.log" 2>&1
    ;;
  external)
    KAFKA="$brokers"
    log "your Kafka at $KAFKA (topic events must exist or be auto-created)"
    ;;
esac

# Prometheus: in Pushgateway mode it scrapes the shards; in remote-write mode it is the store the
# gateway and the collector write into (no Pushgateway job), started first so their first writes
# find it. Either way it scrapes the gateway's and the collector's own metrics.
start_prometheus() {
  local pgw_targets="'127.0.0.1:$PGW_PORT', '127.0.0.1:$PGW2_PORT'" receiver=()
  if [ "$backend" = remote-write ]; then pgw_targets="" receiver=(--web.enable-remote-write-receiver); fi
  log "Prometheus on 127.0.0.1:$PROM_PORT${receiver:+ (remote-write receiver)}"
  sed -e "s/\['localhost:9091'\] # PUSHGATEWAY_TARGET/[$pgw_targets] # PUSHGATEWAY_TARGET/" \
      -e "s/'localhost:9096'\] # GATEWAY_TARGET/'127.0.0.1:$GW_PORT'] # GATEWAY_TARGET/" \
      -e "s/'localhost:9095'\] # COLLECTOR_TARGET/'127.0.0.1:$COLLECTOR_PORT'] # COLLECTOR_TARGET/" \
      dashboards/prometheus/prometheus.yml >"$STACK/prometheus.yml"
  cp dashboards/prometheus/rules.yml "$STACK/rules.yml" # rule_files is relative to the config
  prometheus --config.file="$STACK/prometheus.yml" --storage.tsdb.path="$STACK/prometheus-data" --enable-feature=exemplar-storage \
    "${receiver[@]}" --web.listen-address="127.0.0.1:$PROM_PORT" >"$STACK/prometheus.log" 2>&1 &
  pids+=($!)
  wait_http "http://127.0.0.1:$PROM_PORT/-/ready" prometheus
}

if [ "$backend" = remote-write ]; then
  start_prometheus
  store=(--remote-write-url "http://127.0.0.1:$PROM_PORT/api/v1/write")
  collector_store=("${store[@]}")
  stores_line="Receiver     http://127.0.0.1:$PROM_PORT/api/v1/write   (remote write: SDK groups, job=openwhisk_actions, one per container; platform series; no Pushgateway)"
else
  shard=0
  for port in "$PGW_PORT" "$PGW2_PORT"; do
    log "Pushgateway shard $shard on 127.0.0.1:$port"
    prometheus-pushgateway --web.listen-address="127.0.0.1:$port" \
      --push.disable-consistency-check --persistence.file= >"$STACK/pushgateway$shard.log" 2>&1 &
    pids+=($!)
    wait_http "http://127.0.0.1:$port/-/ready" "pushgateway$shard"
    shard=$((shard + 1))
  done
  store=(--pushgateway-url "http://127.0.0.1:$PGW_PORT" --pushgateway-url "http://127.0.0.1:$PGW2_PORT")
  collector_store=("${store[@]}" --prune-after 2m --prune-interval 30s)
  stores_line="Pushgateways http://127.0.0.1:$PGW_PORT/ http://127.0.0.1:$PGW2_PORT/   (SDK groups: job=openwhisk_actions, one per container, sharded by instance)"
fi

log "whisk-gateway on 127.0.0.1:$GW_PORT (API keys checked against http://127.0.0.1:$CTRL_PORT)"
"$BIN/whisk-gateway" --listen "127.0.0.1:$GW_PORT" --auth api-key \
  --openwhisk-api-host "http://127.0.0.1:$CTRL_PORT" \
  "${store[@]}" --log-level warn >"$STACK/gateway.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$GW_PORT/readyz" gateway

log "collector on 127.0.0.1:$COLLECTOR_PORT"
"$BIN/whisk-collector" --brokers "$KAFKA" --listen "127.0.0.1:$COLLECTOR_PORT" \
  "${collector_store[@]}" --push-interval 5s --instance demo --log-level warn >"$STACK/collector.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$COLLECTOR_PORT/healthz" collector

[ "$backend" = remote-write ] || start_prometheus

cat >&2 <<EOF

  Prometheus   http://127.0.0.1:$PROM_PORT/graph
  Gateway      http://127.0.0.1:$GW_PORT/metrics   (the actions push here with their API key; its own metrics)
  Controller   http://127.0.0.1:$CTRL_PORT/api/v1/namespaces   (served by the emulator during the load)
  $stores_line
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
emulator=("$BIN/whisk-emulator" run --brokers "$KAFKA"
  --pushgateway-url "http://127.0.0.1:$GW_PORT" --controller-port "$CTRL_PORT"
  --init-param WHISK_METRICS_AUTH=api-key
  --action hello="$BIN/hello" --action orders="$BIN/orders" --action flaky="$BIN/flaky"
  --action-timeout flaky=1s --mix hello=3,orders=3,flaky=1
  --rate "$rate" --duration "${duration}s" --burst-every "${BURST_EVERY}s" --burst-size "$BURST_SIZE"
  --idle-timeout 15s)
set +e
if [ -t 1 ]; then
  # script(1) keeps the emulator on a terminal (its live table) and records what it prints.
  script -qefc "$(printf '%q ' "${emulator[@]}")" "$STACK/emulator.out"
else
  "${emulator[@]}" | tee "$STACK/emulator.out"
  (exit "${PIPESTATUS[0]}")
fi
status=$?
set -e
log "load finished (exit $status)"

# Every event the emulator delivered must reach the collector over the broker.
delivered=$(tr -d '\r' <"$STACK/emulator.out" | sed -n 's/^events: [0-9]* published, \([0-9]*\) delivered.*/\1/p' | tail -n1)
collector_events() { # prints "<all events> <activation events>" consumed by the collector
  python3 - "http://127.0.0.1:$COLLECTOR_PORT/metrics" <<'PY'
import sys, urllib.request
total = act = 0
for line in urllib.request.urlopen(sys.argv[1], timeout=2).read().decode().splitlines():
    if line.startswith("whisk_collector_events_total{"):
        v = int(float(line.rsplit(" ", 1)[1]))
        total += v
        if 'type="activation"' in line:
            act += v
print(total, act)
PY
}
if [ -n "$delivered" ]; then
  consumed=0 activations=0
  for _ in $(seq 1 60); do
    read -r consumed activations < <(collector_events 2>/dev/null || echo "0 0")
    [ "$consumed" -ge "$delivered" ] && break
    sleep 0.5
  done
  if [ "$consumed" -ge "$delivered" ]; then
    log "delivered: the emulator's $delivered events all reached the collector ($consumed consumed, $activations activation events)"
  else
    log "NOT delivered: the emulator delivered $delivered events to the broker, the collector consumed $consumed in 30 s (logs: $STACK)"
    [ "$status" != 0 ] || status=1
  fi
fi
exit "$status"
