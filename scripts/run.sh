#!/usr/bin/env bash
# Start the web app, a Celery worker and Celery beat in the foreground.
# Ctrl-C (or any of the three exiting) stops all three: nothing is left behind.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
HOST=${HOST:-127.0.0.1}
PORT=${PORT:-8000}

pids=()
stop() {
  trap - INT TERM EXIT
  echo
  echo "Stopping web app, worker and beat..."
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    # A worker finishing its task gets 10 s; then it is killed.
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  wait 2>/dev/null || true
}
trap stop INT TERM EXIT

"$BIN/celery" -A config worker --loglevel=INFO --concurrency=2 --hostname="worker@%h" &
pids+=($!)
"$BIN/celery" -A config beat --loglevel=INFO &
pids+=($!)
"$BIN/python" manage.py runserver --noreload "$HOST:$PORT" &
pids+=($!)

cat <<MSG

  Rollout Governance Dashboard: http://$HOST:$PORT/
  Demo logins (password: demo): rollout-admin, product-lead, support-lead,
  compliance-lead, sre-lead, compliance-reviewer, auditor; superuser: admin
  Ctrl-C stops the web app, the worker and beat.

MSG
# Return as soon as any of the three exits; the EXIT trap stops the others.
wait -n
