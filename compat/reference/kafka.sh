#!/usr/bin/env bash
# Apache Kafka 4.4 as the reference broker, resolved from Maven Central (pom.xml beside this
# script) into a cache outside the work tree, and run as JVM processes on loopback.
#
#   kafka.sh classpath               resolve once (mvn), print the classpath
#   kafka.sh start DIR [--nodes N] [--config KEY=VALUE]...
#                                    format and start a KRaft cluster of N combined
#                                    broker+controller nodes (default 1) in DIR on free loopback
#                                    ports; wait until every node serves; print the bootstrap
#                                    address (also in DIR/bootstrap)
#   kafka.sh wait DIR [SECONDS]      wait until every node of DIR serves (default 60 s)
#   kafka.sh stop DIR                stop the nodes of DIR (SIGTERM, then SIGKILL after 20 s)
#   kafka.sh kill DIR NODE           kill -9 one node (1-based)
#   kafka.sh run CLASS [ARGS...]     run a Java main class on the classpath
#   kafka.sh connect-classpath       the classpath of Kafka Connect and MirrorMaker 2 (4.3.1:
#                                    connect-pom.xml says why)
#   kafka.sh run-connect CLASS [ARGS...]
#                                    run a main class on the Connect classpath
#
# Kafka's shell tools are their main classes (kafka.sh run CLASS --help for each):
#   kafka-topics                org.apache.kafka.tools.TopicCommand
#   kafka-configs               org.apache.kafka.tools.ConfigCommand
#   kafka-console-producer      org.apache.kafka.tools.ConsoleProducer
#   kafka-console-consumer      org.apache.kafka.tools.consumer.ConsoleConsumer
#   kafka-consumer-groups       org.apache.kafka.tools.consumer.group.ConsumerGroupCommand
#   kafka-get-offsets           org.apache.kafka.tools.GetOffsetShell
#   kafka-delete-records        org.apache.kafka.tools.DeleteRecordsCommand
#   kafka-transactions          org.apache.kafka.tools.TransactionsCommand
#   kafka-log-dirs              org.apache.kafka.tools.LogDirsCommand
#   kafka-acls                  org.apache.kafka.tools.AclCommand
#   kafka-producer-perf-test    org.apache.kafka.tools.ProducerPerformance
#   kafka-consumer-perf-test    org.apache.kafka.tools.ConsumerPerformance
#   kafka-storage               kafka.tools.StorageTool
#   connect-distributed         org.apache.kafka.connect.cli.ConnectDistributed (run-connect)
#   connect-mirror-maker        org.apache.kafka.connect.mirror.MirrorMaker (run-connect)
#   kafka-server-start          kafka.Kafka
#
# Example:
#   dir=$(mktemp -d); bootstrap=$(compat/reference/kafka.sh start "$dir")
#   compat/reference/kafka.sh run org.apache.kafka.tools.TopicCommand \
#       --bootstrap-server "$bootstrap" --create --topic t --partitions 3
#   compat/reference/kafka.sh stop "$dir"
#
# Environment: FJORD_KAFKA_CACHE (default ~/.cache/fjord/kafka-4.4.0) holds the resolved jars
# (libs/, connect-libs/);
# KAFKA_HEAP_OPTS (default -Xms256m -Xmx1g) and KAFKA_JVM_OPTS are passed to every node.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
cache="${FJORD_KAFKA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/fjord/kafka-4.4.0}"

die() { echo "kafka.sh: $*" >&2; exit 2; }

# Resolves the jars a pom names (pom.xml: Kafka; connect-pom.xml: Connect) into
# $cache/<libs>, once per pom content.
resolve() {
  local pom="$here/$1" libs="$cache/$2"
  command -v java >/dev/null || die "java not found: install a JDK 17 (apt-get install openjdk-17-jdk-headless)"
  local stamp
  stamp="$(sha256sum "$pom" | cut -d' ' -f1)"
  if [ -f "$libs.stamp" ] && [ "$(cat "$libs.stamp")" = "$stamp" ]; then
    return
  fi
  command -v mvn >/dev/null || die "mvn not found: install Maven (apt-get install maven)"
  echo "kafka.sh: resolving $(basename "$pom") from Maven Central into $libs …" >&2
  rm -rf "$libs.new"
  mkdir -p "$cache"
  if ! mvn -B -q -f "$pom" dependency:copy-dependencies \
      -DoutputDirectory="$libs.new" -DincludeScope=runtime >&2; then
    die "could not resolve $(basename "$pom") from Maven Central; check that the registry is reachable (mvn -f $pom dependency:tree)"
  fi
  rm -rf "$libs"
  mv "$libs.new" "$libs"
  echo "$stamp" >"$libs.stamp"
}

# The classpath of a pom's jars: classpath_of POM LIBS.
classpath_of() {
  resolve "$1" "$2"
  local cp="" jar
  for jar in "$cache/$2"/*.jar; do cp="${cp:+$cp:}$jar"; done
  echo "$cp"
}

classpath() { classpath_of pom.xml libs; }
connect_classpath() { classpath_of connect-pom.xml connect-libs; }

java_main() {
  local cp="$1"; shift
  # shellcheck disable=SC2086
  exec java ${KAFKA_JVM_OPTS:-} -Dlog4j2.configurationFile="$here/log4j2-tools.properties" -cp "$cp" "$@"
}

free_ports() {
  python3 - "$1" <<'EOF'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

# A cluster id as Kafka makes them: 16 random bytes, URL-safe base64 without padding.
cluster_id() {
  python3 -c 'import base64, os
while True:
    s = base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("=")
    if not s.startswith("-"):
        print(s); break'
}

node_ready() {
  grep -q "Kafka Server started" "$1/server.log" 2>/dev/null
}

wait_ready() {
  local dir="$1" timeout="${2:-60}" n node pid
  n="$(cat "$dir/nodes")"
  local deadline=$((SECONDS + timeout))
  for node in $(seq 1 "$n"); do
    while ! node_ready "$dir/node-$node"; do
      pid="$(cat "$dir/node-$node/pid")"
      if ! kill -0 "$pid" 2>/dev/null; then
        tail -n 40 "$dir/node-$node/server.log" "$dir/node-$node/stdout.log" >&2 || true
        die "node $node of $dir exited before it was ready (logs above)"
      fi
      if [ "$SECONDS" -ge "$deadline" ]; then
        tail -n 40 "$dir/node-$node/server.log" >&2 || true
        die "node $node of $dir not ready after ${timeout}s (log above)"
      fi
      sleep 0.1
    done
  done
}

start() {
  local dir="$1"; shift
  local nodes=1 extra=()
  while [ $# -gt 0 ]; do
    case "$1" in
      --nodes) nodes="$2"; shift 2 ;;
      --config) extra+=("$2"); shift 2 ;;
      *) die "start: unknown argument $1 (see the top of $0)" ;;
    esac
  done
  [ -e "$dir/nodes" ] && die "start: $dir already holds a cluster; stop it and use a new directory"
  mkdir -p "$dir"
  dir="$(cd "$dir" && pwd)"
  local cp id ports voters="" bootstrap="" i
  cp="$(classpath)"
  id="$(cluster_id)"
  read -r -a ports <<<"$(free_ports $((2 * nodes)))"
  for i in $(seq 1 "$nodes"); do
    voters="${voters:+$voters,}$i@127.0.0.1:${ports[$((2 * i - 1))]}"
    bootstrap="${bootstrap:+$bootstrap,}127.0.0.1:${ports[$((2 * i - 2))]}"
  done
  local rf=$((nodes < 3 ? nodes : 3))
  local min_isr=$((rf < 2 ? 1 : 2))
  for i in $(seq 1 "$nodes"); do
    local nd="$dir/node-$i"
    mkdir -p "$nd/data"
    {
      echo "process.roles=broker,controller"
      echo "node.id=$i"
      echo "controller.quorum.voters=$voters"
      echo "listeners=PLAINTEXT://127.0.0.1:${ports[$((2 * i - 2))]},CONTROLLER://127.0.0.1:${ports[$((2 * i - 1))]}"
      echo "advertised.listeners=PLAINTEXT://127.0.0.1:${ports[$((2 * i - 2))]}"
      echo "controller.listener.names=CONTROLLER"
      echo "inter.broker.listener.name=PLAINTEXT"
      echo "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"
      echo "log.dirs=$nd/data"
      echo "offsets.topic.replication.factor=$rf"
      echo "transaction.state.log.replication.factor=$rf"
      echo "transaction.state.log.min.isr=$min_isr"
      echo "share.coordinator.state.topic.replication.factor=$rf"
      echo "share.coordinator.state.topic.min.isr=$min_isr"
      local kv
      for kv in "${extra[@]}"; do echo "$kv"; done
    } >"$nd/server.properties"
    sed "s|@LOG@|$nd/server.log|" "$here/log4j2-server.properties" >"$nd/log4j2.properties"
    java -cp "$cp" -Dlog4j2.configurationFile="$here/log4j2-tools.properties" kafka.tools.StorageTool \
      format --config "$nd/server.properties" --cluster-id "$id" --ignore-formatted >"$nd/format.log" 2>&1 \
      || { cat "$nd/format.log" >&2; die "formatting node $i failed (log above)"; }
  done
  echo "$nodes" >"$dir/nodes"
  echo "$bootstrap" >"$dir/bootstrap"
  for i in $(seq 1 "$nodes"); do
    local nd="$dir/node-$i"
    # shellcheck disable=SC2086
    setsid java ${KAFKA_HEAP_OPTS:--Xms256m -Xmx1g} ${KAFKA_JVM_OPTS:-} -XX:+UseG1GC \
      -Djava.awt.headless=true -Dlog4j2.configurationFile="$nd/log4j2.properties" \
      -cp "$cp" kafka.Kafka "$nd/server.properties" >"$nd/stdout.log" 2>&1 </dev/null &
    echo $! >"$nd/pid"
  done
  wait_ready "$dir" 90
  echo "$bootstrap"
}

stop() {
  local dir="$1" n i pid
  [ -f "$dir/nodes" ] || return 0
  n="$(cat "$dir/nodes")"
  for i in $(seq 1 "$n"); do
    pid="$(cat "$dir/node-$i/pid" 2>/dev/null || true)"
    [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  done
  local deadline=$((SECONDS + 20))
  for i in $(seq 1 "$n"); do
    pid="$(cat "$dir/node-$i/pid" 2>/dev/null || true)"
    [ -n "$pid" ] || continue
    while kill -0 "$pid" 2>/dev/null; do
      if [ "$SECONDS" -ge "$deadline" ]; then kill -9 "$pid" 2>/dev/null || true; break; fi
      sleep 0.1
    done
    rm -f "$dir/node-$i/pid"
  done
}

cmd="${1:-}"
[ $# -gt 0 ] && shift
case "$cmd" in
  classpath) classpath ;;
  connect-classpath) connect_classpath ;;
  start) [ $# -ge 1 ] || die "usage: kafka.sh start DIR [--nodes N] [--config KEY=VALUE]..."; start "$@" ;;
  wait) [ $# -ge 1 ] || die "usage: kafka.sh wait DIR [SECONDS]"; wait_ready "$@" ;;
  stop) [ $# -ge 1 ] || die "usage: kafka.sh stop DIR"; stop "$1" ;;
  kill) [ $# -ge 2 ] || die "usage: kafka.sh kill DIR NODE"; kill -9 "$(cat "$1/node-$2/pid")" ;;
  run) [ $# -ge 1 ] || die "usage: kafka.sh run CLASS [ARGS...]"; java_main "$(classpath)" "$@" ;;
  run-connect) [ $# -ge 1 ] || die "usage: kafka.sh run-connect CLASS [ARGS...]"; java_main "$(connect_classpath)" "$@" ;;
  -h|--help|help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' ;;
  *) die "unknown command '$cmd'; try: kafka.sh --help" ;;
esac
