#!/usr/bin/env bash
# Enrols identities with the org Fabric CAs (which must be running: up.sh starts them).
#   enroll.sh nodes              CA admins, orderers, peers, org admins, hie registrars; builds each org's MSP
#   enroll.sh service ORG [NAME] the hie-ledger service identity of ORG (attributes hie.role=service, hie.id=NAME)
# Idempotent: an identity already registered is only enrolled again.
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
require fabric-ca-client

ca_url() { echo "https://localhost:${CA_PORT[$1]}"; }
registrar_msp() { echo "$(org_dir "$1")/ca-admin/msp"; }

# Fabric CA names files after host and port; give them the stable names the configs refer to.
normalise_msp() {
  local msp="$1"
  local cacert
  cacert="$(find "${msp}/cacerts" -name '*.pem' ! -name ca.pem | head -n 1)"
  if [[ -n "${cacert}" ]]; then mv "${cacert}" "${msp}/cacerts/ca.pem"; fi
  local key
  key="$(find "${msp}/keystore" -name '*_sk' | head -n 1)"
  if [[ -n "${key}" ]]; then mv "${key}" "${msp}/keystore/key.pem"; fi
  cp "${NETWORK_DIR}/fabric-ca/msp-config.yaml" "${msp}/config.yaml"
}

enroll_ca_admin() {
  local org="$1"
  log "enrolling the CA admin of ${org}"
  rm -rf "$(registrar_msp "${org}")/keystore"
  fabric-ca-client enroll -u "https://admin:adminpw@localhost:${CA_PORT[${org}]}" --caname "ca-${org}" \
    --mspdir "$(registrar_msp "${org}")" --tls.certfiles "$(ca_cert "${org}")"
  normalise_msp "$(registrar_msp "${org}")"
}

register() { # org name secret type [attrs]
  local org="$1" name="$2" secret="$3" type="$4" attrs="${5:-}"
  local -a args=(register -u "$(ca_url "${org}")" --caname "ca-${org}" --mspdir "$(registrar_msp "${org}")"
    --tls.certfiles "$(ca_cert "${org}")" --id.name "${name}" --id.secret "${secret}" --id.type "${type}")
  if [[ -n "${attrs}" ]]; then args+=(--id.attrs "${attrs}"); fi
  local out
  if ! out="$(fabric-ca-client "${args[@]}" 2>&1)"; then
    if grep -q "is already registered" <<<"${out}"; then log "${name} is already registered with ca-${org}"; else
      echo "${out}" >&2; fail "registering ${name} with ca-${org} failed"
    fi
  fi
}

enroll() { # org name secret dir [tls-hosts]
  local org="$1" name="$2" secret="$3" dir="$4" tls_hosts="${5:-}"
  local url="https://${name}:${secret}@localhost:${CA_PORT[${org}]}"
  # A re-run must not leave an old key next to the new certificate.
  rm -rf "${dir}/msp/keystore" "${dir}/tls/keystore"
  fabric-ca-client enroll -u "${url}" --caname "ca-${org}" --mspdir "${dir}/msp" --tls.certfiles "$(ca_cert "${org}")"
  normalise_msp "${dir}/msp"
  if [[ -n "${tls_hosts}" ]]; then
    fabric-ca-client enroll -u "${url}" --caname "ca-${org}" --mspdir "${dir}/tls" --tls.certfiles "$(ca_cert "${org}")" \
      --enrollment.profile tls --csr.hosts "${tls_hosts}"
    cp "${dir}/tls/signcerts/cert.pem" "${dir}/tls/server.crt"
    cp "$(find "${dir}/tls/keystore" -name '*_sk' | head -n 1)" "${dir}/tls/server.key"
    cp "$(ca_cert "${org}")" "${dir}/tls/ca.crt"
  fi
}

org_msp() {
  local org="$1" msp
  msp="$(org_dir "${org}")/msp"
  mkdir -p "${msp}/cacerts" "${msp}/tlscacerts"
  cp "$(ca_cert "${org}")" "${msp}/cacerts/ca.pem"
  # One CA per org issues enrolment and TLS certificates, so it is also the org's TLS root.
  cp "$(ca_cert "${org}")" "${msp}/tlscacerts/ca.pem"
  cp "${NETWORK_DIR}/fabric-ca/msp-config.yaml" "${msp}/config.yaml"
}

# The org admin administers peers and the channel; hie-registrar registers, revokes and lists hie participants
# (hie-ledger participant ... --ca fabric) and may only hand out hie.* attributes.
enroll_org_admins() {
  local org="$1" domain
  domain="$(org_domain "${org}")"
  register "${org}" "${org}-admin" "${org}-adminpw" admin
  enroll "${org}" "${org}-admin" "${org}-adminpw" "$(org_dir "${org}")/users/Admin@${domain}"
  register "${org}" hie-registrar hie-registrarpw client \
    '"hf.Registrar.Roles=client","hf.Registrar.Attributes=hie.*",hf.Revoker=true,hf.GenCRL=true'
  enroll "${org}" hie-registrar hie-registrarpw "$(org_dir "${org}")/users/hie-registrar@${domain}"
}

enroll_nodes() {
  local org orderer name
  for org in orderer "${MEMBER_ORGS[@]}"; do
    enroll_ca_admin "${org}"
    org_msp "${org}"
  done
  for orderer in "${ORDERERS[@]}"; do
    name="$(orderer_name "${orderer}")"
    register orderer "${orderer}" "${orderer}pw" orderer
    enroll orderer "${orderer}" "${orderer}pw" "$(orderer_dir "${orderer}")" "${name},localhost,127.0.0.1"
  done
  register orderer orderer-admin orderer-adminpw admin
  enroll orderer orderer-admin orderer-adminpw "$(org_dir orderer)/users/Admin@$(org_domain orderer)"
  for org in "${MEMBER_ORGS[@]}"; do
    name="$(peer_name "${org}")"
    register "${org}" "peer0-${org}" "peer0-${org}pw" peer
    enroll "${org}" "peer0-${org}" "peer0-${org}pw" "$(peer_dir "${org}")" "${name},localhost,127.0.0.1"
    enroll_org_admins "${org}"
  done
}

# The service identity: the only identity hie-ledger signs ledger transactions with (chaincode: hie.role=service).
enroll_service() {
  local org="$1" name="${2:-$1-service}"
  [[ -n "${ORG_MSP[${org}]:-}" && "${org}" != orderer ]] || fail "unknown member org '${org}' (one of: ${MEMBER_ORGS[*]})"
  local secret="${HIE_SERVICE_SECRET:-${name}pw}"
  register "${org}" "${name}" "${secret}" client "hie.role=service:ecert,hie.id=${name}:ecert"
  local dir
  dir="$(org_dir "${org}")/users/${name}@$(org_domain "${org}")"
  rm -rf "${dir}/msp/keystore"
  fabric-ca-client enroll -u "https://${name}:${secret}@localhost:${CA_PORT[${org}]}" --caname "ca-${org}" \
    --mspdir "${dir}/msp" --tls.certfiles "$(ca_cert "${org}")" --enrollment.attrs "hie.role,hie.id"
  normalise_msp "${dir}/msp"
  chmod 600 "${dir}/msp/keystore/key.pem"
  log "service identity of ${org}: ${dir}/msp (signcerts/cert.pem, keystore/key.pem)"
}

case "${1:-}" in
  nodes) enroll_nodes ;;
  service) shift; enroll_service "$@" ;;
  *) echo "usage: $0 nodes | service ORG [NAME]" >&2; exit 2 ;;
esac
