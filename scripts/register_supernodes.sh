#!/bin/sh
# Register SuperNode public keys with a SuperLink started with --enable-supernode-auth.
#
#   scripts/register_supernodes.sh ADDRESS CA_CERT KEY.pub [KEY.pub ...]
#
# A key the SuperLink already knows (its state survives restarts) counts as registered.
# Used by docker-compose.yml's `register` service; works the same on a host with `flwr`.
set -eu
[ $# -ge 3 ] || { echo "usage: $0 ADDRESS CA_CERT KEY.pub [KEY.pub ...]" >&2; exit 2; }
address=$1; ca=$2; shift 2
FLWR_HOME=$(mktemp -d); export FLWR_HOME
trap 'rm -rf "$FLWR_HOME"' EXIT
printf '[superlink]\ndefault = "target"\n\n[superlink.target]\naddress = "%s"\nroot-certificates = "%s"\n' \
    "$address" "$ca" > "$FLWR_HOME/config.toml"
for pub in "$@"; do
    out=$(flwr supernode register "$pub" target --format json 2>&1) || true
    case "$out" in
        *'"success": true'*) echo "registered $pub" ;;
        *"already in use"*) echo "already registered $pub" ;;
        *) echo "could not register $pub: $out" >&2; exit 1 ;;
    esac
done
