#!/usr/bin/env bash
# Builds the chaincode-as-a-service package (metadata.json + code.tar.gz holding connection.json) reproducibly:
# fixed mtimes, owner, modes and member order, and gzip without name or timestamp, so the same files give the same
# bytes and so the same package id (label:SHA-256 of the package) on every run, on every machine. A new package id
# for the same chaincode would start the chaincode server under an id the peers do not know: every chaincode call
# then hangs until the peer's launch timeout (300 s) and fails ("could not launch chaincode").
# Usage: package-chaincode.sh [OUTPUT]   (default: network/.run/channel-artifacts/<label>.tar.gz); prints OUTPUT.
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
require tar gzip

package="${1:-${ARTIFACTS_DIR}/${CC_LABEL}.tar.gz}"
mkdir -p "$(dirname "${package}")"
work="$(mktemp -d)"
trap 'rm -rf "${work}"' EXIT

# A gzip'd tar of FILES in DIR that depends only on the files' names and contents (GNU tar 1.28 or later).
reproducible_tgz() {
  local output="$1" dir="$2"
  shift 2
  tar -C "${dir}" --format=gnu --sort=name --mtime='@0' --owner=0 --group=0 --numeric-owner --mode='a=r,u+w' \
    -cf - "$@" | gzip -9 -n >"${output}"
}

cp "${NETWORK_DIR}/chaincode/connection.json" "${work}/connection.json"
sed "s/\"label\": *\"[^\"]*\"/\"label\": \"${CC_LABEL}\"/" "${NETWORK_DIR}/chaincode/metadata.json" >"${work}/metadata.json"
reproducible_tgz "${work}/code.tar.gz" "${work}" connection.json
reproducible_tgz "${package}" "${work}" metadata.json code.tar.gz
echo "${package}"
