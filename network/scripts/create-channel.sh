#!/usr/bin/env bash
# Creates the channel `hie` with the channel participation API: configtxgen writes its genesis block (profile
# HieChannel), each orderer joins it through its admin endpoint (osnadmin), then each member org's peer joins.
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
require configtxgen osnadmin peer

block="${ARTIFACTS_DIR}/${CHANNEL}.block"
mkdir -p "${ARTIFACTS_DIR}"
if [[ ! -f "${block}" ]]; then
  log "writing the genesis block of ${CHANNEL}"
  configtxgen -configPath "${NETWORK_DIR}/configtx" -profile HieChannel -channelID "${CHANNEL}" -outputBlock "${block}"
fi

for orderer in "${ORDERERS[@]}"; do
  dir="$(orderer_dir "${orderer}")"
  admin=(-o "localhost:${ORDERER_ADMIN_PORT[${orderer}]}" --ca-file "$(orderer_tls_ca)"
    --client-cert "${dir}/tls/server.crt" --client-key "${dir}/tls/server.key")
  # osnadmin exits 0 whatever the HTTP status: read the status line of its answer.
  listed="$(osnadmin channel list "${admin[@]}" --channelID "${CHANNEL}" 2>&1 || true)"
  if grep -q "Status: 200" <<<"${listed}"; then
    log "${orderer} has already joined ${CHANNEL}"
  else
    log "${orderer} joins ${CHANNEL}"
    joined="$(osnadmin channel join "${admin[@]}" --channelID "${CHANNEL}" --config-block "${block}" 2>&1 || true)"
    echo "${joined}"
    grep -q "Status: 201" <<<"${joined}" || fail "${orderer} did not join ${CHANNEL}"
  fi
done

for org in "${MEMBER_ORGS[@]}"; do
  use_peer_admin "${org}"
  if peer channel getinfo -c "${CHANNEL}" >/dev/null 2>&1; then
    log "$(peer_name "${org}") has already joined ${CHANNEL}"
    continue
  fi
  log "$(peer_name "${org}") joins ${CHANNEL}"
  # The orderers need a moment to elect a Raft leader before peers can pull blocks; joining itself is local.
  tries=10
  until peer channel join -b "${block}"; do
    tries=$((tries - 1)); [[ ${tries} -gt 0 ]] || fail "$(peer_name "${org}") could not join ${CHANNEL}"; sleep 2
  done
done
log "channel ${CHANNEL} is up; next: ${NETWORK_DIR}/scripts/deploy-chaincode.sh"
