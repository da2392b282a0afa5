#!/usr/bin/env bash
# Registers an org in the member directory on the channel (docs/exchange.md, docs/fabric.md "Members"):
#   register-member.sh ORG "ORGANISATION NAME" FHIR_BASE_URL [DATA_DIR]
# Runs `hie-ledger member register` as the org's service identity (its --fabric-config, written by fabric-config.sh
# when missing): a P-256 service key and certificate are issued by the org's Fabric CA and kept in
# DATA_DIR/identity/exchange (default network/.run/hie-ledger/ORG-data). Run once per org; again to update.
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

org="${1:-}"
organization="${2:-}"
url="${3:-}"
[[ -n "${org}" && -n "${PEER_PORT[${org}]:-}" && -n "${organization}" && -n "${url}" ]] ||
  fail "usage: $0 ORG \"ORGANISATION NAME\" FHIR_BASE_URL [DATA_DIR]  (ORG: ${MEMBER_ORGS[*]})"
data_dir="${4:-${HIE_CONFIG_DIR}/${org}-data}"
config="${HIE_CONFIG_DIR}/${org}.fabric.json"
[[ -f "${config}" ]] || "${NETWORK_DIR}/scripts/fabric-config.sh" "${org}"
cli="${NETWORK_DIR}/../dist/src/cli.js"
[[ -f "${cli}" ]] || fail "build the service first (npm run build): ${cli} is missing"

node "${cli}" member register --ledger fabric --ca fabric --fabric-config "${config}" --data-dir "${data_dir}" \
  --organization-name "${organization}" --fhir-base-url "${url}"
log "registered ${ORG_MSP[${org}]} in the member directory; list: node ${cli} member list --ledger fabric --fabric-config ${config}"
