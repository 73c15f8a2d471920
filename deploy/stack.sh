#!/usr/bin/env bash
# The tierwatch stack without Docker: Kafka from the Maven Central jars, the worker, live
# simulated traffic and, when Debian's prometheus package is installed, a Prometheus that
# scrapes the worker and evaluates deploy/prometheus/rules.yml. With Docker, use
# deploy/docker-compose.yml instead.
#
# usage: stack.sh up|down|status|prometheus-config
#   up                 start the broker, create the topics, start the worker, the simulator
#                      and Prometheus; skip what already runs. Logs: .run/stack/<name>.log
#   down               stop exactly what `up` started (its pid files), newest first
#   status             print what runs; exit 0 when the worker runs, 3 otherwise
#   prometheus-config  print the Prometheus config that `up` uses
# environment:
#   KAFKA_PORT (default 9092), KAFKA_CONTROLLER_PORT (default KAFKA_PORT + 1),
#   TIERWATCH_WEB_PORT (default 6066), PROMETHEUS_PORT (default 9090),
#   PROMETHEUS (default prometheus), TIERWATCH (default <repo>/.venv/bin/tierwatch).
#   TIERWATCH_BOOTSTRAP_SERVERS or KAFKA_BOOTSTRAP_SERVERS: use that cluster, start no broker.
#   TIERWATCH_STACK_DIR: run directory for pid files, logs and data (default <repo>/.run/stack);
#     `down` and `status` need the same value as `up`.
#   TIERWATCH_STACK_SIM_ARGS: arguments appended to `tierwatch simulate --scenario
#     pareto-trap --kafka` (default "--speedup 3600"; e.g. "--days 30 --speedup 0").
#   PROMETHEUS_INTERVAL: Prometheus' scrape and rule evaluation interval (default 15s).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
SELF="$HERE/$(basename "${BASH_SOURCE[0]}")"
RUN="${TIERWATCH_STACK_DIR:-$REPO/.run/stack}"
[[ "$RUN" == /* ]] || RUN="$PWD/$RUN"  # the worker runs in a subdirectory
KAFKA_SH="$HERE/kafka/kafka.sh"
KAFKA_DIR="$RUN/kafka"
RULES="$HERE/prometheus/rules.yml"

KAFKA_PORT="${KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-$((KAFKA_PORT + 1))}"
WEB_PORT="${TIERWATCH_WEB_PORT:-6066}"
PROM_PORT="${PROMETHEUS_PORT:-9090}"
PROMETHEUS="${PROMETHEUS:-prometheus}"
TIERWATCH="${TIERWATCH:-$REPO/.venv/bin/tierwatch}"
PROM_INTERVAL="${PROMETHEUS_INTERVAL:-15s}"
read -r -a SIM_ARGS <<<"${TIERWATCH_STACK_SIM_ARGS:---speedup 3600}"
EXTERNAL="${TIERWATCH_BOOTSTRAP_SERVERS:-${KAFKA_BOOTSTRAP_SERVERS:-}}"
BOOTSTRAP="${EXTERNAL:-127.0.0.1:$KAFKA_PORT}"
# Every tierwatch process started here talks to this cluster and serves on this port.
export TIERWATCH_BOOTSTRAP_SERVERS="$BOOTSTRAP" TIERWATCH_WEB_PORT="$WEB_PORT"

# Started in this order, stopped in the reverse one (the broker is kafka.sh's business).
SERVICES=(worker simulator prometheus)

usage() {
    # The header comment from "usage:" on.
    awk 'NR > 1 && !/^#/ { exit } /^# usage:/ { on = 1 } on { sub(/^# ?/, ""); print }' "$SELF" >&2
    exit 2
}

die() {
    echo "stack.sh: $*" >&2
    exit 1
}

say() {
    echo "stack.sh: $*"
}

# ---------------------------------------------------------------- processes
# A pid file holds "<pid> <start time>": the start time (field 22 of /proc/<pid>/stat)
# tells our process from another one that got the same pid later.
start_time() {
    # Drop "pid (comm) " first: comm may contain spaces.
    sed -E 's/^.*\) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f20
}

# The pid of service $1 if the process we started still runs (and is not a zombie).
running() {
    local pid started state
    [[ -f "$RUN/$1.pid" ]] || return 1
    read -r pid started <"$RUN/$1.pid" || return 1
    [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
    state="$(sed -E 's/^.*\) ([A-Za-z]).*$/\1/' "/proc/$pid/stat" 2>/dev/null)" || return 1
    [[ "$state" != Z && "$(start_time "$pid")" == "$started" ]] || return 1
    echo "$pid"
}

# Start service $1 as "$@" in its own session, detached, logging to .run/stack/$1.log.
# setsid does not fork here (a background job is no group leader), so $! is the service.
launch() {
    local name="$1" pid
    shift
    echo "---- stack.sh up $(date -u +%FT%TZ): $*" >>"$RUN/$name.log"
    setsid "$@" </dev/null >>"$RUN/$name.log" 2>&1 &
    pid=$!
    echo "$pid $(start_time "$pid")" >"$RUN/$name.pid"
    say "$name started (pid $pid, log ${RUN#"$REPO"/}/$name.log)"
}

# TERM the process group of service $1, KILL it after 30 s; forget the pid file.
stop_service() {
    local name="$1" pid deadline
    if pid="$(running "$name")"; then
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
        deadline=$((SECONDS + 30))
        while running "$name" >/dev/null && ((SECONDS < deadline)); do
            sleep 0.2
        done
        if running "$name" >/dev/null; then
            echo "stack.sh: $name (pid $pid) did not stop in 30s, killing it" >&2
            kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
        fi
        say "$name stopped (pid $pid)"
    fi
    rm -f "$RUN/$name.pid"
}

log_tail() {
    echo "---- tail of ${RUN#"$REPO"/}/$1.log" >&2
    tail -n 30 "$RUN/$1.log" >&2 || true
}

# Wait until URL $2 answers, while service $1 runs; give up after $3 seconds.
await_http() {
    local name="$1" url="$2" deadline=$((SECONDS + $3))
    until curl -fsS -o /dev/null --max-time 2 "$url" 2>/dev/null; do
        if ! running "$name" >/dev/null; then
            log_tail "$name"
            die "$name exited before $url answered; \`make down\` stops the rest"
        fi
        if ((SECONDS >= deadline)); then
            log_tail "$name"
            die "$url did not answer within $3s; \`make down\` stops the stack"
        fi
        sleep 0.5
    done
}

# Whether the simulator started by the last `up` finished its run: its last words, after
# this run's "---- stack.sh up" line, are "produced N events ...".
simulation_done() {
    awk '/^---- stack.sh up/ { done = 0 } /^produced [0-9]+ events/ { done = 1 }
         END { exit !done }' "$RUN/simulator.log" 2>/dev/null
}

# ---------------------------------------------------------------- prometheus
prometheus_config() {
    cat <<EOF
# Generated by deploy/stack.sh: Prometheus for the stack without Docker.
# No Alertmanager here: firing alerts show at http://127.0.0.1:$PROM_PORT/alerts.
global:
  scrape_interval: $PROM_INTERVAL
  evaluation_interval: $PROM_INTERVAL

rule_files:
  - $RULES

scrape_configs:
  - job_name: tierwatch
    static_configs:
      - targets: ["127.0.0.1:$WEB_PORT"]
EOF
}

# ---------------------------------------------------------------- commands
cmd_up() {
    [[ -x "$TIERWATCH" ]] || die "$TIERWATCH not found: run \`make up\` (it sets up the venv)"
    command -v curl >/dev/null || die "curl not found"
    mkdir -p "$RUN"

    if [[ -n "$EXTERNAL" ]]; then
        say "using the Kafka cluster at $EXTERNAL"
    else
        "$KAFKA_SH" start --port "$KAFKA_PORT" --controller-port "$KAFKA_CONTROLLER_PORT" \
            --dir "$KAFKA_DIR" >>"$RUN/kafka.log" 2>&1 ||
            { log_tail kafka; die "the broker did not start"; }
        "$KAFKA_SH" wait --dir "$KAFKA_DIR" >>"$RUN/kafka.log" 2>&1 ||
            { log_tail kafka; die "the broker did not become ready; \`make down\` stops it"; }
        say "kafka ready at $BOOTSTRAP (log ${RUN#"$REPO"/}/kafka.log, ${KAFKA_DIR#"$REPO"/}/logs)"
    fi

    "$TIERWATCH" topics create >>"$RUN/topics.log" 2>&1 ||
        { log_tail topics; die "could not create the topics"; }
    say "topics ready"

    if running worker >/dev/null; then
        say "worker already running"
    else
        # faust keeps its data directory (<app id>-data) in the working directory.
        mkdir -p "$RUN/worker"
        (cd "$RUN/worker" && launch worker "$TIERWATCH" worker)
    fi
    await_http worker "http://127.0.0.1:$WEB_PORT/metrics" 120
    say "worker serving http://127.0.0.1:$WEB_PORT/metrics and /status"

    if running simulator >/dev/null; then
        say "simulator already running"
    else
        launch simulator "$TIERWATCH" simulate --scenario pareto-trap --kafka "${SIM_ARGS[@]}"
    fi

    if ! command -v "$PROMETHEUS" >/dev/null; then
        say "no \`$PROMETHEUS\` on PATH (Debian: apt-get install prometheus): skipping Prometheus"
    elif running prometheus >/dev/null; then
        say "prometheus already running"
    else
        mkdir -p "$RUN/prom"
        prometheus_config >"$RUN/prometheus.yml"
        launch prometheus "$PROMETHEUS" --config.file="$RUN/prometheus.yml" \
            --storage.tsdb.path="$RUN/prom" --web.listen-address="127.0.0.1:$PROM_PORT"
        await_http prometheus "http://127.0.0.1:$PROM_PORT/-/ready" 60
        say "prometheus at http://127.0.0.1:$PROM_PORT (alerts: /alerts)"
    fi

    if running simulator >/dev/null; then
        :
    elif simulation_done; then
        say "the simulator has produced all its traffic (--speedup 0 or a short --days)"
    else
        log_tail simulator
        echo "stack.sh: the simulator exited (see above); the rest of the stack runs" >&2
    fi
}

cmd_down() {
    local i
    for ((i = ${#SERVICES[@]} - 1; i >= 0; i--)); do
        stop_service "${SERVICES[i]}"
    done
    if [[ -f "$KAFKA_DIR/kafka.pid" ]]; then
        "$KAFKA_SH" stop --dir "$KAFKA_DIR" >>"$RUN/kafka.log" 2>&1 ||
            { log_tail kafka; die "could not stop the broker"; }
        say "kafka stopped"
    fi
}

cmd_status() {
    local name pid rc=3
    if [[ -d "$KAFKA_DIR" ]]; then
        echo "kafka: $("$KAFKA_SH" status --dir "$KAFKA_DIR" || true)"
    fi
    for name in "${SERVICES[@]}"; do
        if pid="$(running "$name")"; then
            echo "$name: running pid=$pid log=${RUN#"$REPO"/}/$name.log"
            [[ "$name" != worker ]] || rc=0
        else
            echo "$name: stopped"
        fi
    done
    return "$rc"
}

case "${1:-}" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    prometheus-config) prometheus_config ;;
    *) usage ;;
esac
