#!/usr/bin/env bash
# Stops the hie network. With --clean, also deletes all its state (network/.run: crypto material, ledgers, logs).
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

if [[ "${MODE}" == docker ]]; then
  compose down
else
  # Stops exactly the processes up.sh/deploy-chaincode.sh started (their pids), nothing else.
  shopt -s nullglob
  for pidfile in "${PID_DIR}"/*.pid; do
    pid="$(cat "${pidfile}")"
    if kill -0 "${pid}" 2>/dev/null; then
      log "stopping $(basename "${pidfile}" .pid) (pid ${pid})"
      kill "${pid}"
    fi
    rm -f "${pidfile}"
  done
fi

if [[ "${1:-}" == --clean ]]; then
  log "deleting ${RUN_DIR}"
  rm -rf "${RUN_DIR}"
fi
