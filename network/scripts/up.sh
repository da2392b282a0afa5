#!/usr/bin/env bash
# Starts the hie network: the four Fabric CAs, the org identities, three Raft orderers and one peer per member org.
#   HIE_NETWORK_MODE=native (default): Fabric release binaries on PATH (peer, orderer, fabric-ca-server, ...)
#   HIE_NETWORK_MODE=docker: official images through Docker Compose (the admin CLIs still run on the host)
# Then: create-channel.sh, deploy-chaincode.sh, enroll.sh service ORG, fabric-config.sh ORG (docs/fabric.md).
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
require fabric-ca-client peer configtxgen osnadmin
if [[ "${MODE}" == native ]]; then require fabric-ca-server orderer; fi

mkdir -p "${RUN_DIR}" "${DATA_DIR}" "${LOG_DIR}" "${PID_DIR}" "${ARTIFACTS_DIR}" "${RUN_DIR}/env" "${RUN_DIR}/config"

# core.yaml/orderer.yaml of the release, with the chaincode-as-a-service builder at the release's builders/ccaas
# (the release's core.yaml names the path inside the peer image, /opt/hyperledger/ccaas_builder).
prepare_fabric_config() {
  local release builders
  release="$(fabric_release_config)"
  builders="$(cd "${release}/.." && pwd)/builders/ccaas"
  if [[ "${MODE}" == native && ! -x "${builders}/bin/detect" ]]; then
    fail "the Fabric release has no chaincode-as-a-service builder at ${builders}"
  fi
  sed "s|/opt/hyperledger/ccaas_builder|${builders}|" "${release}/core.yaml" >"${RUN_DIR}/config/core.yaml"
  cp "${release}/orderer.yaml" "${RUN_DIR}/config/orderer.yaml"
}

start_cas() {
  local org home
  for org in orderer "${MEMBER_ORGS[@]}"; do
    home="${CA_HOME_DIR}/${org}"
    mkdir -p "${home}"
    cp "${NETWORK_DIR}/fabric-ca/${org}/fabric-ca-server-config.yaml" "${home}/fabric-ca-server-config.yaml"
    if [[ "${MODE}" == native ]]; then
      start_native "ca.${org}" fabric-ca-server start -b admin:adminpw --home "${home}"
    fi
  done
  if [[ "${MODE}" == docker ]]; then compose up -d ca-orderer ca-hospital1 ca-hospital2 ca-lab; fi
  for org in orderer "${MEMBER_ORGS[@]}"; do
    wait_for_port "${CA_PORT[${org}]}" "ca-${org}"
    local tries=30
    until [[ -s "$(ca_cert "${org}")" ]]; do
      tries=$((tries - 1)); [[ ${tries} -gt 0 ]] || fail "ca-${org} wrote no $(ca_cert "${org}")"; sleep 1
    done
  done
}

start_nodes() {
  local orderer org name
  for orderer in "${ORDERERS[@]}"; do
    name="$(orderer_name "${orderer}")"
    mkdir -p "${DATA_DIR}/${name}"
    orderer_env "${orderer}" >"${RUN_DIR}/env/${name}.env"
    if [[ "${MODE}" == native ]]; then start_native_with_env "${name}" "$(orderer_env "${orderer}")" orderer; fi
  done
  for org in "${MEMBER_ORGS[@]}"; do
    name="$(peer_name "${org}")"
    mkdir -p "${DATA_DIR}/${name}"
    peer_env "${org}" >"${RUN_DIR}/env/${name}.env"
    if [[ "${MODE}" == native ]]; then start_native_with_env "${name}" "$(peer_env "${org}")" peer node start; fi
  done
  if [[ "${MODE}" == docker ]]; then compose up -d orderer1 orderer2 orderer3 peer0-hospital1 peer0-hospital2 peer0-lab; fi
  for orderer in "${ORDERERS[@]}"; do wait_for_port "${ORDERER_ADMIN_PORT[${orderer}]}" "${orderer}"; done
  for org in "${MEMBER_ORGS[@]}"; do wait_for_port "${PEER_PORT[${org}]}" "$(peer_name "${org}")"; done
}

log "mode: ${MODE}; state in ${RUN_DIR}"
prepare_fabric_config
start_cas
if [[ ! -f "$(orderer_dir orderer1)/tls/server.crt" ]]; then
  "${NETWORK_DIR}/scripts/enroll.sh" nodes
fi
start_nodes
log "network is up; next: ${NETWORK_DIR}/scripts/create-channel.sh"
