#!/usr/bin/env bash
# Shared settings of the hie network, sourced by every script in network/scripts/.
# One source of truth for org names, MSP ids, ports and paths: every node listens on 127.0.0.1 with its own ports,
# in both run modes (native binaries, or Docker Compose with host networking), so certificates, configtx.yaml,
# connection.json and the hie-ledger config are the same in both.
# shellcheck disable=SC2034  # variables are used by the scripts that source this file

set -euo pipefail

NETWORK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PROJECT_DIR="$(cd "${NETWORK_DIR}/.." && pwd)"
# All runtime state (crypto material, ledgers, logs, pids) lives here; `down.sh --clean` deletes it.
# Fixed, because configtx/configtx.yaml refers to it by relative path.
RUN_DIR="${NETWORK_DIR}/.run"
# Docker Compose mounts RUN_DIR at the same absolute path in every container, so paths are equal in both modes.
export HIE_RUN_DIR="${RUN_DIR}"
# native: Fabric release binaries on PATH; docker: official images via Docker Compose (admin CLIs still run on the host).
MODE="${HIE_NETWORK_MODE:-native}"

CHANNEL="${HIE_CHANNEL:-hie}"
CC_NAME="${HIE_CHAINCODE_NAME:-hie}"
CC_VERSION="${HIE_CHAINCODE_VERSION:-1.0}"
CC_SEQUENCE="${HIE_CHAINCODE_SEQUENCE:-1}"
CC_LABEL="${CC_NAME}_${CC_VERSION}"
CC_SERVER_ADDRESS="127.0.0.1:9999"
# Endorsement policy of the chaincode definition (docs/fabric.md, "Endorsement policy"). Empty: the channel's
# /Channel/Application/Endorsement policy, MAJORITY Endorsement (2 of the 3 member orgs).
CC_SIGNATURE_POLICY="${HIE_SIGNATURE_POLICY:-}"

FABRIC_VERSION="${FABRIC_VERSION:-2.5.12}"
FABRIC_CA_VERSION="${FABRIC_CA_VERSION:-1.5.15}"

HOST="127.0.0.1"
DOMAIN="hie.example.com"

# Member organisations (application orgs): key -> MSP id, peer port, chaincode port, operations port, CA port.
MEMBER_ORGS=(hospital1 hospital2 lab)
declare -A ORG_MSP=([hospital1]=Hospital1MSP [hospital2]=Hospital2MSP [lab]=LabMSP [orderer]=OrdererMSP)
declare -A PEER_PORT=([hospital1]=7051 [hospital2]=8051 [lab]=10051)
declare -A PEER_CC_PORT=([hospital1]=7052 [hospital2]=8052 [lab]=10052)
declare -A PEER_OPS_PORT=([hospital1]=9444 [hospital2]=9445 [lab]=9446)
declare -A CA_PORT=([hospital1]=7054 [hospital2]=8054 [orderer]=9054 [lab]=10054)

# Ordering service: three Raft orderers of OrdererMSP.
ORDERERS=(orderer1 orderer2 orderer3)
declare -A ORDERER_PORT=([orderer1]=7050 [orderer2]=8050 [orderer3]=9050)
declare -A ORDERER_ADMIN_PORT=([orderer1]=7053 [orderer2]=8053 [orderer3]=9053)
declare -A ORDERER_OPS_PORT=([orderer1]=9441 [orderer2]=9442 [orderer3]=9443)

ORGS_DIR="${RUN_DIR}/organizations"
CA_HOME_DIR="${RUN_DIR}/fabric-ca"
DATA_DIR="${RUN_DIR}/data"
LOG_DIR="${RUN_DIR}/logs"
PID_DIR="${RUN_DIR}/pids"
ARTIFACTS_DIR="${RUN_DIR}/channel-artifacts"
HIE_CONFIG_DIR="${RUN_DIR}/hie-ledger"
# fabric-ca-client keeps its own config file in its home; keep it with the network's state, not in ~.
export FABRIC_CA_CLIENT_HOME="${RUN_DIR}/fabric-ca-client"

org_domain() { echo "$1.${DOMAIN}"; }
org_dir() {
  if [[ "$1" == orderer ]]; then echo "${ORGS_DIR}/ordererOrganizations/$(org_domain orderer)"; else echo "${ORGS_DIR}/peerOrganizations/$(org_domain "$1")"; fi
}
peer_name() { echo "peer0.$(org_domain "$1")"; }
peer_dir() { echo "$(org_dir "$1")/peers/$(peer_name "$1")"; }
orderer_name() { echo "$1.$(org_domain orderer)"; }
orderer_dir() { echo "$(org_dir orderer)/orderers/$(orderer_name "$1")"; }
admin_msp() { echo "$(org_dir "$1")/users/Admin@$(org_domain "$1")/msp"; }
# The org CA signs both enrolment and TLS certificates, so its certificate is also the TLS root of the org.
ca_cert() { echo "${CA_HOME_DIR}/$1/ca-cert.pem"; }
orderer_tls_ca() { ca_cert orderer; }

log() { printf '\033[1;34m[hie-network]\033[0m %s\n' "$*" >&2; }
fail() { printf '\033[1;31m[hie-network] error:\033[0m %s\n' "$*" >&2; exit 1; }

require() {
  local tool
  for tool in "$@"; do
    command -v "${tool}" >/dev/null 2>&1 || fail "'${tool}' is not on PATH (see docs/fabric.md, 'Prerequisites')"
  done
}

# FABRIC_CFG_PATH for the peer/orderer CLIs: the config/ directory of the Fabric release (core.yaml, orderer.yaml).
fabric_release_config() {
  if [[ -n "${FABRIC_RELEASE_CONFIG:-}" ]]; then echo "${FABRIC_RELEASE_CONFIG}"; return; fi
  local bin
  bin="$(dirname "$(command -v peer)")"
  [[ -f "${bin}/../config/core.yaml" ]] || fail "cannot find the Fabric release config/ next to $(command -v peer); set FABRIC_RELEASE_CONFIG"
  (cd "${bin}/../config" && pwd)
}

# Environment of the peer CLI acting as an org's admin against that org's peer.
use_peer_admin() {
  local org="$1"
  export FABRIC_CFG_PATH="${RUN_DIR}/config"
  export CORE_PEER_TLS_ENABLED=true
  export CORE_PEER_LOCALMSPID="${ORG_MSP[${org}]}"
  export CORE_PEER_MSPCONFIGPATH; CORE_PEER_MSPCONFIGPATH="$(admin_msp "${org}")"
  export CORE_PEER_TLS_ROOTCERT_FILE; CORE_PEER_TLS_ROOTCERT_FILE="$(ca_cert "${org}")"
  export CORE_PEER_ADDRESS="localhost:${PEER_PORT[${org}]}"
}

# Arguments that point a peer CLI command at the ordering service (orderer1; any of the three would do).
orderer_args() {
  echo "-o localhost:${ORDERER_PORT[orderer1]} --ordererTLSHostnameOverride $(orderer_name orderer1) --tls --cafile $(orderer_tls_ca)"
}

wait_for_port() {
  local port="$1" what="$2" tries=60
  until (exec 3<>"/dev/tcp/${HOST}/${port}") 2>/dev/null; do
    tries=$((tries - 1))
    [[ ${tries} -gt 0 ]] || fail "${what} did not open ${HOST}:${port} (logs: ${LOG_DIR})"
    sleep 1
  done
}

# Environment of a peer node (the same in both modes; in docker mode the image's own core.yaml is used).
peer_env() {
  local org="$1" dir name
  dir="$(peer_dir "${org}")"
  name="$(peer_name "${org}")"
  cat <<ENV
CORE_PEER_ID=${name}
CORE_PEER_ADDRESS=${HOST}:${PEER_PORT[${org}]}
CORE_PEER_LISTENADDRESS=${HOST}:${PEER_PORT[${org}]}
CORE_PEER_CHAINCODEADDRESS=${HOST}:${PEER_CC_PORT[${org}]}
CORE_PEER_CHAINCODELISTENADDRESS=${HOST}:${PEER_CC_PORT[${org}]}
CORE_PEER_GOSSIP_BOOTSTRAP=${HOST}:${PEER_PORT[${org}]}
CORE_PEER_GOSSIP_EXTERNALENDPOINT=${HOST}:${PEER_PORT[${org}]}
CORE_PEER_LOCALMSPID=${ORG_MSP[${org}]}
CORE_PEER_MSPCONFIGPATH=${dir}/msp
CORE_PEER_TLS_ENABLED=true
CORE_PEER_TLS_CERT_FILE=${dir}/tls/server.crt
CORE_PEER_TLS_KEY_FILE=${dir}/tls/server.key
CORE_PEER_TLS_ROOTCERT_FILE=${dir}/tls/ca.crt
CORE_PEER_GATEWAY_ENABLED=true
CORE_PEER_FILESYSTEMPATH=${DATA_DIR}/${name}
CORE_LEDGER_SNAPSHOTS_ROOTDIR=${DATA_DIR}/${name}/snapshots
CORE_OPERATIONS_LISTENADDRESS=${HOST}:${PEER_OPS_PORT[${org}]}
CORE_METRICS_PROVIDER=prometheus
FABRIC_LOGGING_SPEC=INFO
ENV
}

# Environment of an orderer node: channel participation API, no system channel (BOOTSTRAPMETHOD=none).
orderer_env() {
  local orderer="$1" dir
  dir="$(orderer_dir "${orderer}")"
  cat <<ENV
ORDERER_GENERAL_LISTENADDRESS=${HOST}
ORDERER_GENERAL_LISTENPORT=${ORDERER_PORT[${orderer}]}
ORDERER_GENERAL_LOCALMSPID=${ORG_MSP[orderer]}
ORDERER_GENERAL_LOCALMSPDIR=${dir}/msp
ORDERER_GENERAL_TLS_ENABLED=true
ORDERER_GENERAL_TLS_PRIVATEKEY=${dir}/tls/server.key
ORDERER_GENERAL_TLS_CERTIFICATE=${dir}/tls/server.crt
ORDERER_GENERAL_TLS_ROOTCAS=[${dir}/tls/ca.crt]
ORDERER_GENERAL_CLUSTER_CLIENTCERTIFICATE=${dir}/tls/server.crt
ORDERER_GENERAL_CLUSTER_CLIENTPRIVATEKEY=${dir}/tls/server.key
ORDERER_GENERAL_CLUSTER_ROOTCAS=[${dir}/tls/ca.crt]
ORDERER_GENERAL_BOOTSTRAPMETHOD=none
ORDERER_CHANNELPARTICIPATION_ENABLED=true
ORDERER_ADMIN_LISTENADDRESS=${HOST}:${ORDERER_ADMIN_PORT[${orderer}]}
ORDERER_ADMIN_TLS_ENABLED=true
ORDERER_ADMIN_TLS_CERTIFICATE=${dir}/tls/server.crt
ORDERER_ADMIN_TLS_PRIVATEKEY=${dir}/tls/server.key
ORDERER_ADMIN_TLS_ROOTCAS=[${dir}/tls/ca.crt]
ORDERER_ADMIN_TLS_CLIENTAUTHREQUIRED=true
ORDERER_ADMIN_TLS_CLIENTROOTCAS=[${dir}/tls/ca.crt]
ORDERER_FILELEDGER_LOCATION=${DATA_DIR}/$(orderer_name "${orderer}")
ORDERER_CONSENSUS_WALDIR=${DATA_DIR}/$(orderer_name "${orderer}")/etcdraft/wal
ORDERER_CONSENSUS_SNAPDIR=${DATA_DIR}/$(orderer_name "${orderer}")/etcdraft/snapshot
ORDERER_OPERATIONS_LISTENADDRESS=${HOST}:${ORDERER_OPS_PORT[${orderer}]}
ORDERER_METRICS_PROVIDER=prometheus
FABRIC_LOGGING_SPEC=INFO
ENV
}

# Start a native process in the background, its pid in PID_DIR (down.sh stops exactly these pids).
start_native() {
  local name="$1"; shift
  local pidfile="${PID_DIR}/${name}.pid"
  if [[ -f "${pidfile}" ]] && kill -0 "$(cat "${pidfile}")" 2>/dev/null; then
    log "${name} is already running (pid $(cat "${pidfile}"))"
    return
  fi
  mkdir -p "${PID_DIR}" "${LOG_DIR}"
  nohup "$@" >"${LOG_DIR}/${name}.log" 2>&1 &
  echo $! >"${pidfile}"
  log "started ${name} (pid $!, log ${LOG_DIR}/${name}.log)"
}

# Start a node natively with the KEY=VALUE environment printed by an *_env function.
start_native_with_env() {
  local name="$1" env_text="$2"; shift 2
  local -a vars
  mapfile -t vars <<<"${env_text}"
  start_native "${name}" env "${vars[@]}" "FABRIC_CFG_PATH=${RUN_DIR}/config" "$@"
}

compose() {
  require docker
  HIE_UID="$(id -u)" HIE_GID="$(id -g)" FABRIC_VERSION="${FABRIC_VERSION}" FABRIC_CA_VERSION="${FABRIC_CA_VERSION}" \
    docker compose -f "${NETWORK_DIR}/compose/docker-compose.yaml" -p hie "$@"
}
