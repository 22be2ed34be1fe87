#!/usr/bin/env bash
# Certificates and SuperNode authentication keys for a trial federation (TLS + node authentication).
# Needs only openssl and ssh-keygen (OpenSSH); nothing is downloaded. Run with --help for usage.
set -euo pipefail

usage() {
    cat <<'EOF'
make-certificates.sh: a CA, a SuperLink server certificate and one SuperNode key pair per hospital.

Usage:
  scripts/make-certificates.sh [--out DIR] [--host NAME]... [--node NAME]... [--days N] [--keys-only] [--force]

  --out DIR     output folder (default: certificates)
  --host NAME   extra DNS name or IP address of the SuperLink for the server certificate's SAN
                (repeatable; localhost and 127.0.0.1 are always included)
  --node NAME   a hospital (SuperNode) that gets an EC P-384 key pair in OpenSSH format for
                Flower's node authentication (repeatable)
  --days N      validity of the CA and the server certificate (default: 365)
  --keys-only   make only the --node key pairs (what a hospital runs for itself), no CA
  --force       replace existing files instead of keeping them
  -h, --help    this text

Output (existing files are kept unless --force; the server certificate is remade when the CA or
the requested names changed):
  DIR/ca.crt, DIR/ca.key              the trial CA (ca.crt goes to every hospital: --root-certificates)
  DIR/server.crt, DIR/server.key      the SuperLink's certificate (--ssl-certfile/--ssl-keyfile)
  DIR/nodes/NAME, DIR/nodes/NAME.pub  a hospital's private key (--auth-supernode-private-key; stays
                                      at the hospital) and public key (`flwr supernode register`)

Examples:
  scripts/make-certificates.sh --out certs --host superlink.example.org --node university --node regional
  scripts/make-certificates.sh --out keys --keys-only --node university     # at a hospital
EOF
}

out_dir="certificates"
days=365
keys_only=0
force=0
hosts=()
nodes=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --out) out_dir="${2:?--out needs a folder}"; shift 2 ;;
        --host) hosts+=("${2:?--host needs a name}"); shift 2 ;;
        --node) nodes+=("${2:?--node needs a name}"); shift 2 ;;
        --days) days="${2:?--days needs a number}"; shift 2 ;;
        --keys-only) keys_only=1; shift ;;
        --force) force=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "make-certificates.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done

for tool in openssl ssh-keygen; do
    command -v "$tool" >/dev/null || { echo "make-certificates.sh: '$tool' not found (install OpenSSL / OpenSSH)" >&2; exit 1; }
done
if [[ $keys_only -eq 1 && ${#nodes[@]} -eq 0 ]]; then
    echo "make-certificates.sh: --keys-only needs at least one --node NAME" >&2; exit 2
fi
for name in "${nodes[@]}"; do
    [[ "$name" =~ ^[A-Za-z0-9._-]+$ ]] || { echo "make-certificates.sh: node name '$name': use letters, digits, . _ -" >&2; exit 2; }
done

mkdir -p "$out_dir"
umask 077

keep() {  # keep FILE: true when FILE exists and --force was not given
    [[ -e "$1" && $force -eq 0 ]]
}

make_ca() {
    if keep "$out_dir/ca.key" && keep "$out_dir/ca.crt"; then
        echo "kept     $out_dir/ca.crt (existing CA)"
        return
    fi
    openssl ecparam -name secp384r1 -genkey -noout -out "$out_dir/ca.key"
    openssl req -x509 -new -key "$out_dir/ca.key" -sha384 -days "$days" -subj "/CN=ecs-fl trial federation CA" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -out "$out_dir/ca.crt" 2>/dev/null
    chmod 644 "$out_dir/ca.crt"
    echo "created  $out_dir/ca.crt, $out_dir/ca.key (CA, $days days)"
    force_server=1
}

san_list() {  # the subjectAltName value for localhost, 127.0.0.1, ::1 and every --host
    local entries=("DNS:localhost" "IP:127.0.0.1" "IP:0:0:0:0:0:0:0:1") host
    for host in "${hosts[@]}"; do
        if [[ "$host" =~ ^[0-9.]+$ || "$host" == *:* ]]; then entries+=("IP:$host"); else entries+=("DNS:$host"); fi
    done
    local IFS=,
    echo "${entries[*]}"
}

server_up_to_date() {  # the existing server certificate is signed by our CA and names every host
    [[ -e "$out_dir/server.crt" && -e "$out_dir/server.key" && $force -eq 0 && ${force_server:-0} -eq 0 ]] || return 1
    openssl verify -CAfile "$out_dir/ca.crt" "$out_dir/server.crt" >/dev/null 2>&1 || return 1
    local names host
    names="$(openssl x509 -in "$out_dir/server.crt" -noout -ext subjectAltName 2>/dev/null)"
    for host in localhost 127.0.0.1 "${hosts[@]}"; do
        grep -Fq -- "$host" <<<"$names" || return 1
    done
}

make_server_certificate() {
    if server_up_to_date; then
        echo "kept     $out_dir/server.crt (signed by the CA, names: $(san_list))"
        return
    fi
    local common_name="${hosts[0]:-localhost}"
    openssl ecparam -name secp384r1 -genkey -noout -out "$out_dir/server.key"
    openssl req -new -key "$out_dir/server.key" -subj "/CN=$common_name" -out "$out_dir/server.csr" 2>/dev/null
    local extensions="$out_dir/server.ext"
    printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=%s\n' \
        "$(san_list)" >"$extensions"
    openssl x509 -req -in "$out_dir/server.csr" -CA "$out_dir/ca.crt" -CAkey "$out_dir/ca.key" -CAcreateserial \
        -days "$days" -sha384 -extfile "$extensions" -out "$out_dir/server.crt" 2>/dev/null
    rm -f "$out_dir/server.csr" "$extensions" "$out_dir/ca.srl"
    chmod 644 "$out_dir/server.crt"
    echo "created  $out_dir/server.crt, $out_dir/server.key (SuperLink, names: $(san_list))"
}

make_node_key() {  # an EC P-384 key pair in OpenSSH format (what flower-supernode and `flwr supernode register` read)
    local name="$1" key="$out_dir/nodes/$1"
    mkdir -p "$out_dir/nodes"
    if keep "$key" && keep "$key.pub"; then
        echo "kept     $key, $key.pub (SuperNode key pair of $name)"
        return
    fi
    rm -f "$key" "$key.pub"
    ssh-keygen -q -t ecdsa -b 384 -N "" -C "ecs-fl supernode $name" -f "$key"
    chmod 644 "$key.pub"
    echo "created  $key, $key.pub (SuperNode key pair of $name)"
}

force_server=0
if [[ $keys_only -eq 0 ]]; then
    make_ca
    make_server_certificate
fi
for name in "${nodes[@]}"; do
    make_node_key "$name"
done

if [[ $keys_only -eq 0 ]]; then
    echo "SuperLink: flower-superlink --ssl-ca-certfile $out_dir/ca.crt --ssl-certfile $out_dir/server.crt --ssl-keyfile $out_dir/server.key --enable-supernode-auth ..."
fi
for name in "${nodes[@]}"; do
    echo "$name: register with 'flwr supernode register $out_dir/nodes/$name.pub <connection> --name $name'; the hospital keeps $out_dir/nodes/$name"
done
