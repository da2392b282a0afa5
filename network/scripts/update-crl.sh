#!/usr/bin/env bash
# Puts an org's current certificate revocation list into the channel's MSP configuration of that org.
# Fabric peers refuse a revoked certificate only once its CRL is in the channel configuration: revoking with
# Fabric CA alone does not stop a revoked service or admin certificate from endorsing or submitting.
#   update-crl.sh ORG [CRL_PEM]   (default: a fresh CRL from the org's CA, 'fabric-ca-client gencrl')
# The update is signed by the org's admin: the org's MSP value is governed by its own Admins policy.
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
require peer configtxlator jq fabric-ca-client base64

org="${1:-}"
[[ -n "${org}" && -n "${PEER_PORT[${org}]:-}" ]] || fail "usage: $0 ORG [CRL_PEM]  (ORG: ${MEMBER_ORGS[*]})"
msp_id="${ORG_MSP[${org}]}"
read -ra orderer <<<"$(orderer_args)"

work="$(mktemp -d)"
trap 'rm -rf "${work}"' EXIT

crl="${2:-}"
if [[ -z "${crl}" ]]; then
  registrar="$(org_dir "${org}")/ca-admin/msp"
  fabric-ca-client gencrl -u "https://localhost:${CA_PORT[${org}]}" --caname "ca-${org}" --mspdir "${registrar}" \
    --tls.certfiles "$(ca_cert "${org}")"
  crl="${registrar}/crls/crl.pem"
fi
[[ -s "${crl}" ]] || fail "no CRL at ${crl}"
# Keep the org's local MSP copy in step, so configtxgen-based tooling sees the same list.
mkdir -p "$(org_dir "${org}")/msp/crls"
cp "${crl}" "$(org_dir "${org}")/msp/crls/crl.pem"

use_peer_admin "${org}"
peer channel fetch config "${work}/config_block.pb" "${orderer[@]}" -c "${CHANNEL}"
configtxlator proto_decode --input "${work}/config_block.pb" --type common.Block --output "${work}/config_block.json"
jq '.data.data[0].payload.data.config' "${work}/config_block.json" >"${work}/config.json"

crl_b64="$(base64 -w0 <"${crl}")"
jq --arg msp "${msp_id}" --arg crl "${crl_b64}" \
  '.channel_group.groups.Application.groups[$msp].values.MSP.value.config.revocation_list = [$crl]' \
  "${work}/config.json" >"${work}/modified_config.json"

configtxlator proto_encode --input "${work}/config.json" --type common.Config --output "${work}/config.pb"
configtxlator proto_encode --input "${work}/modified_config.json" --type common.Config --output "${work}/modified_config.pb"
if ! configtxlator compute_update --channel_id "${CHANNEL}" --original "${work}/config.pb" \
  --updated "${work}/modified_config.pb" --output "${work}/update.pb" 2>"${work}/compute.err"; then
  if grep -q "no differences" "${work}/compute.err"; then log "the channel already has this CRL for ${msp_id}"; exit 0; fi
  cat "${work}/compute.err" >&2; fail "configtxlator compute_update failed"
fi
configtxlator proto_decode --input "${work}/update.pb" --type common.ConfigUpdate --output "${work}/update.json"
jq --arg ch "${CHANNEL}" '{payload: {header: {channel_header: {channel_id: $ch, type: 2}}, data: {config_update: .}}}' \
  "${work}/update.json" >"${work}/envelope.json"
configtxlator proto_encode --input "${work}/envelope.json" --type common.Envelope --output "${work}/envelope.pb"

# `peer channel update` signs with the current admin (this org's), which satisfies /Channel/Application/<org>/Admins.
peer channel update -f "${work}/envelope.pb" -c "${CHANNEL}" "${orderer[@]}"
log "the CRL of ${msp_id} is in the configuration of ${CHANNEL}; its revoked certificates are now refused"
