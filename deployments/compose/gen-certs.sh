#!/bin/sh
# gen-certs.sh DIR [HOST...] makes a test PKI for the NATS cluster with openssl:
#   DIR/ca.crt, DIR/ca.key        a CA (10 years)
#   DIR/HOST.crt, DIR/HOST.key    per NATS server (default hosts n1 n2 n3), valid for the DNS name
#                                 HOST and localhost, for both server and client authentication
#                                 (a server presents it on its outgoing routes too)
# It keeps files that exist already, so running it again is harmless; delete DIR to start over.
# Keys are mode 0600: the NATS servers that read them run as root in the compose file. For
# production, issue these from your own PKI (cert-manager on Kubernetes).
set -eu
dir=${1:?usage: gen-certs.sh DIR [HOST...]}
shift
[ "$#" -gt 0 ] || set -- n1 n2 n3
mkdir -p "$dir"
umask 077
if [ ! -f "$dir/ca.crt" ]; then
  openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 3650 \
    -subj "/CN=dtfleet test NATS CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -keyout "$dir/ca.key" -out "$dir/ca.crt" 2>/dev/null
fi
for host in "$@"; do
  [ -f "$dir/$host.crt" ] && continue
  openssl req -newkey rsa:2048 -nodes -sha256 -subj "/CN=$host" \
    -keyout "$dir/$host.key" -out "$dir/$host.csr" 2>/dev/null
  printf 'subjectAltName=DNS:%s,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\n' "$host" >"$dir/$host.ext"
  openssl x509 -req -sha256 -days 825 -in "$dir/$host.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" \
    -CAcreateserial -extfile "$dir/$host.ext" -out "$dir/$host.crt" 2>/dev/null
  rm -f "$dir/$host.csr" "$dir/$host.ext"
done
# Certificates are public; the CA must be readable by the dtfleet containers (uid 65532).
chmod 0644 "$dir"/*.crt
chmod 0755 "$dir"
echo "certificates in $dir: ca.crt $(for h in "$@"; do printf '%s.crt ' "$h"; done)"
