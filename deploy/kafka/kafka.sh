#!/usr/bin/env bash
# Run a single-node Apache Kafka broker (KRaft, broker + controller) on 127.0.0.1 from the
# jars on Maven Central; no Docker, no Kafka tarball.
#
# usage: kafka.sh start|stop|status|wait [options]
#   start    fetch the jars if needed, format storage unless already formatted, launch
#   wait     block until the broker answers a metadata request with a live broker
#   stop     TERM the broker this script started (KILL after --timeout), remove its data
#   status   print the state; exit 0 when running, 3 when stopped
# options:
#   --port N             broker port (default 9092, or the port of the last start in --dir)
#   --controller-port N  controller port (default: broker port + 1)
#   --dir DIR            run directory (default <repo>/.run/kafka-<port>)
#   --timeout S          wait: give up after S seconds (default 90); stop: KILL after S (default 30)
#   --keep-data          stop: keep the formatted data, so that the next start reuses it
#   --owner-pid PID      start: stop the broker (and remove its data) once process PID exits
#   --listener PROTO:N   start: one more listener, named after its protocol (SSL, SASL_SSL or
#                        SASL_PLAINTEXT), on port N; repeatable. PLAINTEXT stays (wait probes it)
#   --config FILE        start: properties appended to the config (keystores, JAAS, authorizer)
#   --add-scram SPEC     start: a SCRAM credential written at format time, e.g.
#                        'SCRAM-SHA-256=[name=admin,password=s3cret]'; repeatable
# environment:
#   JAVA (default java), MVN (default mvn), KAFKA_HEAP_OPTS (default -Xmx512m -Xms128m),
#   KAFKA_JVM_OPTS (extra JVM flags, applied last), KAFKA_CDS=0 (no class-data sharing)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
SELF="$HERE/$(basename "${BASH_SOURCE[0]}")"
LIB="$HERE/lib"
POM="$HERE/pom.xml"
TEMPLATE="$HERE/server.properties"
LOG4J="$HERE/log4j2.yaml"
JAVA="${JAVA:-java}"
MVN="${MVN:-mvn}"
read -r -a HEAP_OPTS <<<"${KAFKA_HEAP_OPTS:--Xmx512m -Xms128m}"
read -r -a EXTRA_OPTS <<<"${KAFKA_JVM_OPTS:-}"

usage() {
    # The header comment from "usage:" on.
    awk 'NR > 1 && !/^#/ { exit } /^# usage:/ { on = 1 } on { sub(/^# ?/, ""); print }' "$SELF" >&2
    exit 2
}

die() {
    echo "kafka.sh: $*" >&2
    exit 1
}

# ---------------------------------------------------------------- arguments
CMD="${1:-}"
case "$CMD" in
    start | stop | status | wait | _watch) shift ;;
    "" | -h | --help | help) usage ;;
    *) die "unknown command: $CMD (start|stop|status|wait)" ;;
esac
PORT=""
CPORT=""
DIR=""
TIMEOUT=""
KEEP_DATA=0
OWNER_PID=""
WATCH_PID=""
EXTRA_CONFIG=""
LISTENERS=()
SCRAM=()
while (($#)); do
    case "$1" in
        --port) PORT="${2:?--port needs a value}"; shift 2 ;;
        --controller-port) CPORT="${2:?--controller-port needs a value}"; shift 2 ;;
        --dir) DIR="${2:?--dir needs a value}"; shift 2 ;;
        --timeout) TIMEOUT="${2:?--timeout needs a value}"; shift 2 ;;
        --keep-data) KEEP_DATA=1; shift ;;
        --owner-pid) OWNER_PID="${2:?--owner-pid needs a value}"; shift 2 ;;
        --listener) LISTENERS+=("${2:?--listener needs PROTOCOL:PORT}"); shift 2 ;;
        --config) EXTRA_CONFIG="${2:?--config needs a file}"; shift 2 ;;
        --add-scram) SCRAM+=("${2:?--add-scram needs a value}"); shift 2 ;;
        --broker-pid) WATCH_PID="${2:?--broker-pid needs a value}"; shift 2 ;;  # internal
        -h | --help) usage ;;
        *) die "unknown option: $1" ;;
    esac
done

# A --dir without --port refers to the broker last started there.
if [[ -z "$PORT" && -n "$DIR" && -f "$DIR/port" ]]; then
    PORT="$(<"$DIR/port")"
fi
PORT="${PORT:-9092}"
[[ "$PORT" =~ ^[0-9]+$ ]] || die "bad --port: $PORT"
CPORT="${CPORT:-$((PORT + 1))}"
[[ "$CPORT" =~ ^[0-9]+$ ]] || die "bad --controller-port: $CPORT"
for l in "${LISTENERS[@]}"; do
    [[ "$l" =~ ^(SSL|SASL_SSL|SASL_PLAINTEXT):[0-9]+$ ]] ||
        die "bad --listener: $l (SSL, SASL_SSL or SASL_PLAINTEXT, then :PORT)"
done
[[ -z "$EXTRA_CONFIG" || -f "$EXTRA_CONFIG" ]] || die "no such --config file: $EXTRA_CONFIG"
DIR="${DIR:-$REPO/.run/kafka-$PORT}"
[[ "$CMD" != start ]] || mkdir -p "$DIR"
[[ ! -d "$DIR" ]] || DIR="$(cd "$DIR" && pwd)"
DATA="$DIR/data"
LOGS="$DIR/logs"
CONF="$DIR/server.properties"
PIDFILE="$DIR/kafka.pid"

# ---------------------------------------------------------------- helpers
# Flags every JVM here gets, then "$@" (later flags win).
jvm_opts() {
    # log4j's own shutdown hook would stop logging before Kafka's hook logs its shutdown.
    printf '%s\n' "-Djava.awt.headless=true" "-Dlog4j2.shutdownHookEnabled=false" \
        "-Dlog4j2.configurationFile=$LOG4J" "-Dkafka.logs.dir=$LOGS" "$@"
}

# Whether a process exists and is not a zombie (an unreaped one still answers kill -0).
alive() {
    kill -0 "$1" 2>/dev/null || return 1
    [[ ! -r "/proc/$1/stat" ]] || [[ "$(sed -E 's/^.*\) ([A-Za-z]).*$/\1/' "/proc/$1/stat" 2>/dev/null)" != Z ]]
}

# The broker we started, if it is still alive. The command line must name our config so
# that a recycled pid is never mistaken for the broker.
broker_pid() {
    local pid
    [[ -f "$PIDFILE" ]] || return 1
    pid="$(<"$PIDFILE")"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    alive "$pid" || return 1
    if [[ -r "/proc/$pid/cmdline" ]]; then
        tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF "kafka.Kafka $CONF" || return 1
    fi
    echo "$pid"
}

port_in_use() {
    # shellcheck disable=SC2016  # $0 expands in the inner shell
    timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$0"' "$1" 2>/dev/null
}

# Send a Metadata v4 request (supported by Kafka 3.x and 4.x; 4.0 removed v0-v3) and
# succeed when the response lists at least one broker. A KRaft broker accepts connections
# before it is unfenced, but lists itself only once it is, so this is the readiness test.
probe() {
    local out
    local -a b
    # size=23 | api_key=3 api_version=4 correlation_id=1 | client_id="kafka.sh" |
    # topics=null (all) | allow_auto_topic_creation=false
    # shellcheck disable=SC2016  # $0 expands in the inner shell
    out="$(timeout 5 bash -c '
        exec 3<>"/dev/tcp/127.0.0.1/$0" || exit 1
        printf "\x00\x00\x00\x17\x00\x03\x00\x04\x00\x00\x00\x01\x00\x08kafka.sh\xff\xff\xff\xff\x00" >&3
        od -An -tu1 -N16 <&3' "$1" 2>/dev/null)" || return 1
    read -r -a b <<<"$out"
    # response: size(4) correlation_id(4) throttle_time_ms(4) broker_count(4)
    ((${#b[@]} == 16)) || return 1
    ((b[4] == 0 && b[5] == 0 && b[6] == 0 && b[7] == 1)) || return 1
    (((b[12] << 24 | b[13] << 16 | b[14] << 8 | b[15]) >= 1))
}

show_logs() {
    local f
    # server.log first: stdout.log (WARN and up, JVM errors) is then what a reader sees last.
    # Tab-indented lines are the config dump, which would crowd out everything else.
    for f in "$LOGS/server.log" "$LOGS/stdout.log"; do
        if [[ -s "$f" ]]; then
            echo "---- tail of $f" >&2
            grep -v $'^\t' "$f" | tail -n 30 >&2 || true
        fi
    done
}

# Copy the runtime classpath into lib/ once per pom.xml content; mvn caches in ~/.m2, so a
# re-fetch after a version bump is offline when the jars were seen before.
ensure_lib() {
    local stamp out
    stamp="$(sha256sum "$POM" | cut -d' ' -f1)"
    mkdir -p "$LIB"
    exec 9>"$LIB/.lock"
    command -v flock >/dev/null && flock 9
    if [[ "$(cat "$LIB/.pom.sha256" 2>/dev/null || true)" != "$stamp" ]] ||
        ! compgen -G "$LIB/kafka_2.13-*.jar" >/dev/null; then
        echo "kafka.sh: fetching the Kafka jars from Maven Central into $LIB" >&2
        rm -f "$LIB"/*.jar "$LIB"/*.jsa "$LIB/.pom.sha256"
        if ! out="$("$MVN" -q -B -f "$POM" dependency:copy-dependencies 2>&1)"; then
            echo "$out" >&2
            die "mvn could not fetch the Kafka jars"
        fi
        echo "$stamp" >"$LIB/.pom.sha256"
    fi
    exec 9>&-
}

# Class-data sharing: the first broker started with a given JDK and lib/ records the classes
# it loads into an archive when it exits (moved into lib/ by `stop`); later JVMs map it and
# start about a third faster. A missing or mismatched archive is ignored by the JVM.
cds_archive() {
    local key
    key="$({ "$JAVA" -version 2>&1; cat "$LIB/.pom.sha256"; } | sha256sum | cut -c1-16)"
    echo "$LIB/classes-$key.jsa"
}

# JVM flags for class-data sharing: use the archive when there is one, else (for the
# broker, when $1 is "record") record one into the run dir.
cds_opts() {
    local archive
    [[ "${KAFKA_CDS:-1}" != 0 ]] || return 0
    archive="$(cds_archive)"
    echo "-Xlog:cds=off"
    echo "-Xlog:cds+dynamic=off"
    if [[ -f "$archive" ]]; then
        echo "-XX:SharedArchiveFile=$archive"
    elif [[ "${1:-}" == record ]]; then
        echo "-XX:ArchiveClassesAtExit=$DIR/classes.jsa"
        echo "$archive" >"$DIR/classes.target"
    fi
}

# After a clean exit, publish the recorded archive (copy, then an atomic rename in lib/).
publish_cds() {
    local target
    if [[ -s "$DIR/classes.jsa" && -f "$DIR/classes.target" ]]; then
        target="$(<"$DIR/classes.target")"
        cp "$DIR/classes.jsa" "$target.tmp.$$" && mv -f "$target.tmp.$$" "$target"
    fi
    rm -f "$DIR/classes.jsa" "$DIR/classes.target"
}

# The template with the keys that depend on this run replaced, then --config's properties
# (a key given twice takes its last value).
write_config() {
    local l listeners="PLAINTEXT://127.0.0.1:$PORT" map="CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"
    for l in "${LISTENERS[@]}"; do
        listeners+=",${l%%:*}://127.0.0.1:${l#*:}"
        map+=",${l%%:*}:${l%%:*}"
    done
    {
        grep -vE '^[[:space:]]*(listeners|advertised\.listeners|listener\.security\.protocol\.map|controller\.quorum\.voters|log\.dirs)[[:space:]]*=' "$TEMPLATE"
        echo
        echo "# ---- set by kafka.sh"
        echo "listeners=$listeners,CONTROLLER://127.0.0.1:$CPORT"
        echo "advertised.listeners=$listeners"
        echo "listener.security.protocol.map=$map"
        echo "controller.quorum.voters=1@127.0.0.1:$CPORT"
        echo "log.dirs=$DATA"
        if [[ -n "$EXTRA_CONFIG" ]]; then
            echo
            echo "# ---- from $EXTRA_CONFIG"
            cat "$EXTRA_CONFIG"
        fi
    } >"$CONF"
}

# A cluster id is a random UUID in unpadded base64url, as `StorageTool random-uuid` makes
# it; generating it here saves a JVM start. Kafka never issues ids with a leading "-".
new_cluster_id() {
    local id
    while :; do
        id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')"
        [[ "$id" != -* ]] && break
    done
    echo "$id"
}

format_storage() {
    local -a opts cds scram=()
    local s
    for s in "${SCRAM[@]}"; do
        scram+=(--add-scram "$s")
    done
    mapfile -t cds < <(cds_opts)
    # A short-lived tool: C1 only and serial GC start faster.
    mapfile -t opts < <(jvm_opts -Xmx256m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC "${cds[@]}")
    "$JAVA" "${opts[@]}" -cp "$LIB/*" kafka.tools.StorageTool format -t "$(new_cluster_id)" -c "$CONF" "${scram[@]}" \
        >>"$LOGS/format.log" 2>&1 || { tail -n 20 "$LOGS/format.log" >&2; die "storage format failed"; }
}

# ---------------------------------------------------------------- commands
cmd_start() {
    local pid p running_port
    local -a opts cds
    if pid="$(broker_pid)"; then
        running_port="$(cat "$DIR/port" 2>/dev/null || echo "$PORT")"
        [[ "$running_port" == "$PORT" ]] || die "a broker on port $running_port already runs in $DIR"
        echo "kafka.sh: already running (pid $pid, port $PORT, dir $DIR)"
        return 0
    fi
    rm -f "$PIDFILE"
    command -v "$JAVA" >/dev/null || die "java not found (Kafka 4.x needs Java 17+)"
    for p in "$PORT" "$CPORT" "${LISTENERS[@]#*:}"; do
        ! port_in_use "$p" || die "port $p on 127.0.0.1 is already in use"
    done
    ensure_lib
    mkdir -p "$DATA" "$LOGS"
    write_config
    echo "$PORT" >"$DIR/port"
    # A stop --keep-data leaves formatted storage behind; start reuses it as a restart.
    [[ -f "$DATA/meta.properties" ]] || format_storage

    rm -f "$DIR/classes.jsa" "$DIR/classes.target"
    mapfile -t cds < <(cds_opts record)
    # A broker out of memory exits rather than limping on, so tests fail instead of hanging.
    mapfile -t opts < <(jvm_opts "${HEAP_OPTS[@]}" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
        -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent \
        -XX:+ExitOnOutOfMemoryError "${cds[@]}" "${EXTRA_OPTS[@]}")
    # Own session: a Ctrl-C or a process-group kill aimed at the caller leaves the broker
    # to `stop` (or to the owner watchdog), which shuts it down cleanly. setsid does not
    # fork here (we are not a group leader), so $! is the JVM's pid.
    local launcher=()
    command -v setsid >/dev/null && launcher=(setsid)
    echo "---- kafka.sh start $(date -u +%FT%TZ)" >>"$LOGS/stdout.log"
    "${launcher[@]}" "$JAVA" "${opts[@]}" -cp "$LIB/*" kafka.Kafka "$CONF" \
        </dev/null >>"$LOGS/stdout.log" 2>&1 &
    pid=$!
    echo "$pid" >"$PIDFILE"
    if [[ -n "$OWNER_PID" ]]; then
        "${launcher[@]}" "$SELF" _watch --dir "$DIR" --owner-pid "$OWNER_PID" --broker-pid "$pid" \
            </dev/null >/dev/null 2>&1 &
    fi
    echo "kafka.sh: started pid $pid, bootstrap 127.0.0.1:$PORT, dir $DIR"
}

cmd_wait() {
    local timeout="${TIMEOUT:-90}" deadline
    deadline=$((SECONDS + timeout))
    while :; do
        if [[ -f "$PIDFILE" ]] && ! broker_pid >/dev/null; then
            show_logs
            die "the broker process exited before it became ready"
        fi
        if probe "$PORT"; then
            echo "kafka.sh: ready at 127.0.0.1:$PORT"
            return 0
        fi
        if ((SECONDS >= deadline)); then
            show_logs
            die "no broker answering at 127.0.0.1:$PORT after ${timeout}s"
        fi
        sleep 0.5
    done
}

cmd_stop() {
    local timeout="${TIMEOUT:-30}" pid deadline
    if pid="$(broker_pid)"; then
        kill -TERM "$pid" 2>/dev/null || true
        deadline=$((SECONDS + timeout))
        while alive "$pid" && ((SECONDS < deadline)); do
            sleep 0.2
        done
        if alive "$pid"; then
            echo "kafka.sh: pid $pid did not stop in ${timeout}s, killing it" >&2
            kill -KILL "$pid" 2>/dev/null || true
            while alive "$pid"; do sleep 0.1; done
            rm -f "$DIR/classes.jsa"  # possibly cut short
        fi
        publish_cds
        echo "kafka.sh: stopped pid $pid"
    else
        echo "kafka.sh: not running (dir $DIR)"
    fi
    rm -f "$PIDFILE"
    if ((KEEP_DATA == 0)); then
        rm -rf "$DATA"
    fi
}

cmd_status() {
    local pid
    if pid="$(broker_pid)"; then
        if probe "$PORT"; then
            echo "running pid=$pid bootstrap=127.0.0.1:$PORT dir=$DIR"
        else
            echo "starting pid=$pid bootstrap=127.0.0.1:$PORT dir=$DIR"
        fi
        return 0
    fi
    echo "stopped dir=$DIR"
    return 3
}

# Internal: stop the broker once its owner exits (a test session that died without
# cleaning up), unless the broker exited or was replaced by a restart first.
cmd_watch() {
    [[ -n "$OWNER_PID" && -n "$WATCH_PID" ]] || die "_watch needs --owner-pid and --broker-pid"
    while alive "$OWNER_PID" && alive "$WATCH_PID"; do
        sleep 1
    done
    if [[ "$(cat "$PIDFILE" 2>/dev/null || true)" == "$WATCH_PID" ]] && ! alive "$OWNER_PID"; then
        cmd_stop
    fi
}

case "$CMD" in
    start) cmd_start ;;
    wait) cmd_wait ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    _watch) cmd_watch ;;
esac
