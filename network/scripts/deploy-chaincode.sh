#!/usr/bin/env bash
# Deploys the hie-ledger chaincode (chaincode/ package) as chaincode-as-a-service through the Fabric lifecycle:
# package (connection.json + metadata.json), start the chaincode server with the package id, install on every
# member org's peer, approve by each org, commit. Re-run with HIE_CHAINCODE_VERSION / HIE_CHAINCODE_SEQUENCE raised
# to upgrade. Endorsement policy: /Channel/Application/Endorsement (MAJORITY Endorsement), or HIE_SIGNATURE_POLICY.
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
require peer tar gzip
read -ra orderer <<<"$(orderer_args)"

# 1. Package: for chaincode-as-a-service the code package only says where the chaincode server listens. Built
# reproducibly, so a re-run (e.g. after down.sh/up.sh) computes the id the peers already have.
package="$("${NETWORK_DIR}/scripts/package-chaincode.sh")"
use_peer_admin hospital1
package_id="$(peer lifecycle chaincode calculatepackageid "${package}")"
log "package ${package}: ${package_id}"

# The id the peers already know for this label wins: the one hospital1 approved at this sequence, else one
# installed with this label (a package from before packages were reproducible). The chaincode server must run
# under exactly that id; under any other, every chaincode call hangs 300 s and fails.
package_ids_in() { grep -o "\"package_id\": *\"${CC_LABEL}:[0-9a-f]*\"" | sed 's/.*"\([^"]*\)"$/\1/'; }
approved_id="$(peer lifecycle chaincode queryapproved --channelID "${CHANNEL}" --name "${CC_NAME}" \
  --sequence "${CC_SEQUENCE}" --output json 2>/dev/null | package_ids_in | head -n 1 || true)"
installed_ids="$(peer lifecycle chaincode queryinstalled --output json | package_ids_in || true)"
if [[ -n "${approved_id}" ]]; then
  known_id="${approved_id}"
elif grep -qx "${package_id}" <<<"${installed_ids}"; then
  known_id="${package_id}"
else
  known_id="$(head -n 1 <<<"${installed_ids}")"
fi
if [[ -n "${known_id}" && "${known_id}" != "${package_id}" ]]; then
  log "reusing ${known_id}, already known to the peers (not ${package_id})"
  package_id="${known_id}"
  if grep -qx "${package_id}" <<<"${installed_ids}"; then
    # Installing on the other peers needs that very package: fetch it back from hospital1's peer.
    peer lifecycle chaincode getinstalledpackage --package-id "${package_id}" --output-directory "${ARTIFACTS_DIR}"
    package="${ARTIFACTS_DIR}/${package_id}.tar.gz"
  fi
fi

# 2. The chaincode server, identified by the package id.
if [[ "${MODE}" == docker ]]; then
  export CHAINCODE_ID="${package_id}"
  compose up -d --build chaincode
else
  [[ -f "${PROJECT_DIR}/chaincode/dist/index.js" ]] || (cd "${PROJECT_DIR}" && npm run build --workspace chaincode)
  [[ -f "${PID_DIR}/chaincode.pid" ]] && kill "$(cat "${PID_DIR}/chaincode.pid")" 2>/dev/null && rm -f "${PID_DIR}/chaincode.pid"
  start_native chaincode env "CHAINCODE_ID=${package_id}" bash -c \
    "cd '${PROJECT_DIR}/chaincode' && exec '${PROJECT_DIR}/node_modules/.bin/fabric-chaincode-node' server --chaincode-address=${CC_SERVER_ADDRESS} --chaincode-id=\"\${CHAINCODE_ID}\""
fi
wait_for_port "${CC_SERVER_ADDRESS##*:}" "the chaincode server"

# The endorsement policy, stated rather than left to the default: MAJORITY Endorsement (2 of the 3 member orgs), so
# one org's peer alone cannot endorse anything (e.g. a grant for another home's patient). The chaincode adds
# key-level policies on top (a member's directory entry, a patient's grants: the owner's peer must endorse).
policy=(--channel-config-policy /Channel/Application/Endorsement)
if [[ -n "${CC_SIGNATURE_POLICY}" ]]; then policy=(--signature-policy "${CC_SIGNATURE_POLICY}"); fi

# Already committed at this sequence (a re-run, e.g. after down/up): the chaincode server is all that was needed.
use_peer_admin hospital1
committed="$(peer lifecycle chaincode querycommitted --channelID "${CHANNEL}" --name "${CC_NAME}" --output json 2>/dev/null || true)"
if grep -q "\"sequence\": *${CC_SEQUENCE}[,}[:space:]]" <<<"${committed}"; then
  log "${CC_NAME} sequence ${CC_SEQUENCE} is already committed on ${CHANNEL}"
  exit 0
fi

# 3. Install and approve, org by org (each org's admin acts for its org).
for org in "${MEMBER_ORGS[@]}"; do
  use_peer_admin "${org}"
  installed="$(peer lifecycle chaincode queryinstalled --output json)"
  if grep -q "\"${package_id}\"" <<<"${installed}"; then
    log "already installed on $(peer_name "${org}")"
  else
    log "installing on $(peer_name "${org}")"
    peer lifecycle chaincode install "${package}"
  fi
  readiness="$(peer lifecycle chaincode checkcommitreadiness --channelID "${CHANNEL}" --name "${CC_NAME}" \
    --version "${CC_VERSION}" --sequence "${CC_SEQUENCE}" "${policy[@]}" --output json)"
  if grep -q "\"${ORG_MSP[${org}]}\": *true" <<<"${readiness}"; then
    log "${ORG_MSP[${org}]} has already approved ${CC_NAME} ${CC_VERSION} (sequence ${CC_SEQUENCE})"
    continue
  fi
  log "${ORG_MSP[${org}]} approves ${CC_NAME} ${CC_VERSION} (sequence ${CC_SEQUENCE})"
  peer lifecycle chaincode approveformyorg "${orderer[@]}" --channelID "${CHANNEL}" --name "${CC_NAME}" \
    --version "${CC_VERSION}" --package-id "${package_id}" --sequence "${CC_SEQUENCE}" "${policy[@]}"
done

# 4. Commit, endorsed by every member org's peer.
use_peer_admin hospital1
peer lifecycle chaincode checkcommitreadiness --channelID "${CHANNEL}" --name "${CC_NAME}" --version "${CC_VERSION}" \
  --sequence "${CC_SEQUENCE}" "${policy[@]}" --output json
peers=()
for org in "${MEMBER_ORGS[@]}"; do
  peers+=(--peerAddresses "localhost:${PEER_PORT[${org}]}" --tlsRootCertFiles "$(ca_cert "${org}")")
done
peer lifecycle chaincode commit "${orderer[@]}" --channelID "${CHANNEL}" --name "${CC_NAME}" --version "${CC_VERSION}" \
  --sequence "${CC_SEQUENCE}" "${policy[@]}" "${peers[@]}"
peer lifecycle chaincode querycommitted --channelID "${CHANNEL}" --name "${CC_NAME}"
log "chaincode ${CC_NAME} is committed on ${CHANNEL}; next: enroll.sh service ORG and fabric-config.sh ORG"
