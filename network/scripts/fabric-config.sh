#!/usr/bin/env bash
# Writes the --fabric-config file of an org's hie-ledger service (docs/fabric.md, "The --fabric-config file"):
#   fabric-config.sh ORG [SERVICE_NAME]  ->  network/.run/hie-ledger/ORG.fabric.json
# Enrols the service identity first if it does not exist yet.
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

org="${1:-}"
[[ -n "${org}" && -n "${PEER_PORT[${org}]:-}" ]] || fail "usage: $0 ORG [SERVICE_NAME]  (ORG: ${MEMBER_ORGS[*]})"
name="${2:-${org}-service}"
domain="$(org_domain "${org}")"
service_dir="$(org_dir "${org}")/users/${name}@${domain}"
registrar_dir="$(org_dir "${org}")/users/hie-registrar@${domain}"
if [[ ! -f "${service_dir}/msp/keystore/key.pem" ]]; then "${NETWORK_DIR}/scripts/enroll.sh" service "${org}" "${name}"; fi

mkdir -p "${HIE_CONFIG_DIR}"
out="${HIE_CONFIG_DIR}/${org}.fabric.json"
cat >"${out}" <<JSON
{
  "peerEndpoint": "${HOST}:${PEER_PORT[${org}]}",
  "hostAlias": "$(peer_name "${org}")",
  "tlsRootCertPath": "$(ca_cert "${org}")",
  "mspId": "${ORG_MSP[${org}]}",
  "channel": "${CHANNEL}",
  "chaincode": "${CC_NAME}",
  "identity": {
    "certPath": "${service_dir}/msp/signcerts/cert.pem",
    "keyPath": "${service_dir}/msp/keystore/key.pem"
  },
  "ca": {
    "url": "https://localhost:${CA_PORT[${org}]}",
    "caName": "ca-${org}",
    "tlsRootCertPath": "$(ca_cert "${org}")",
    "registrar": {
      "certPath": "${registrar_dir}/msp/signcerts/cert.pem",
      "keyPath": "${registrar_dir}/msp/keystore/key.pem"
    }
  }
}
JSON
log "wrote ${out}; run: hie-ledger serve --ledger fabric --fabric-config ${out}"
