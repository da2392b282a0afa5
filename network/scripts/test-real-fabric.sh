#!/usr/bin/env bash
# The project on a real Fabric network, natively, from nothing and back: up.sh, create-channel.sh,
# deploy-chaincode.sh (chaincode as a service; then once more, as after down/up: same package id, no 300 s hang),
# fabric-config.sh hospital1; checks that one organisation's peer alone cannot endorse (the chaincode's
# endorsement policy); runs the Ledger contract suite and the service end to end with --ledger fabric
# (test/fabric/real-network.test.ts); takes the network down (down.sh --clean; HIE_KEEP_NETWORK=1 keeps it).
#   FABRIC_BIN=/path/to/bin network/scripts/test-real-fabric.sh     (or: FABRIC_BIN=... npm run test:real-fabric)
# FABRIC_BIN holds peer, orderer, configtxgen, configtxlator, osnadmin, fabric-ca-server and fabric-ca-client, with
# the release's config/ and builders/ccaas/ next to it (docs/fabric.md, "Prerequisites" and "Building Fabric from
# source"). Without them it skips, saying why, and exits 0.
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

skip() {
  log "skipped: $*"
  exit 0
}
[[ -n "${FABRIC_BIN:-}" ]] || skip "FABRIC_BIN is not set (the directory of the Fabric 2.5 and Fabric CA 1.5 binaries; docs/fabric.md)"
for tool in peer orderer configtxgen configtxlator osnadmin fabric-ca-server fabric-ca-client; do
  [[ -x "${FABRIC_BIN}/${tool}" ]] || skip "${FABRIC_BIN}/${tool} is missing"
done
[[ "${MODE}" == native ]] || fail "this script runs the network natively; unset HIE_NETWORK_MODE"
[[ ! -e "${RUN_DIR}" ]] || fail "${RUN_DIR} exists: a network is set up here; take it down first (down.sh --clean)"
require node npx
export PATH="${FABRIC_BIN}:${PATH}"
scripts="${NETWORK_DIR}/scripts"

finish() {
  local status=$?
  if [[ "${HIE_KEEP_NETWORK:-}" == 1 ]]; then
    log "the network keeps running (HIE_KEEP_NETWORK=1); stop it with ${scripts}/down.sh --clean"
  else
    if [[ ${status} -ne 0 && -d "${LOG_DIR}" ]]; then
      local kept
      kept="$(mktemp -d)"
      cp -r "${LOG_DIR}" "${kept}/"
      log "failed; the nodes' logs are kept in ${kept}/logs"
    fi
    "${scripts}/down.sh" --clean
  fi
  exit "${status}"
}
trap finish EXIT

# A transaction endorsed by one organisation's peer only must be invalidated at commit: the chaincode definition's
# policy (deploy-chaincode.sh: MAJORITY Endorsement, 2 of the 3 member orgs) is what stops one org from signing a
# grant for another home's patient or another member's directory entry on its own.
single_org_endorsement_is_refused() {
  local org=hospital1 root out
  read -ra orderer <<<"$(orderer_args)"
  use_peer_admin "${org}"
  CORE_PEER_MSPCONFIGPATH="$(org_dir "${org}")/users/${org}-service@$(org_domain "${org}")/msp"
  root="$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')"
  out="$(peer chaincode invoke "${orderer[@]}" -C "${CHANNEL}" -n "${CC_NAME}" \
    --peerAddresses "localhost:${PEER_PORT[${org}]}" --tlsRootCertFiles "$(ca_cert "${org}")" \
    -c "{\"function\":\"anchor:AnchorBatch\",\"Args\":[\"${root}\",\"1\"]}" --waitForEvent 2>&1 || true)"
  grep -q ENDORSEMENT_POLICY_FAILURE <<<"${out}" ||
    fail "a transaction endorsed by ${org}'s peer alone was not invalidated with ENDORSEMENT_POLICY_FAILURE: ${out}"
  log "one organisation's endorsement alone is refused (ENDORSEMENT_POLICY_FAILURE)"
}

[[ -f "${PROJECT_DIR}/chaincode/dist/index.js" ]] || (cd "${PROJECT_DIR}" && npm run build --workspace chaincode)
"${scripts}/up.sh"
"${scripts}/create-channel.sh"
"${scripts}/deploy-chaincode.sh"
# A second run, as after down.sh/up.sh: the same package id, the chaincode server restarted under it.
"${scripts}/deploy-chaincode.sh"
"${scripts}/fabric-config.sh" hospital1
single_org_endorsement_is_refused
(cd "${PROJECT_DIR}" &&
  HIE_REAL_FABRIC_CONFIG="${HIE_CONFIG_DIR}/hospital1.fabric.json" npx vitest run test/fabric/real-network.test.ts)
log "the real Fabric network passed every check"
