#!/usr/bin/env bash
# netns-cluster.sh — a pretend multi-node cluster on one Linux machine.
#
# Each "host" is a network namespace with its own veth link to a bridge in the
# root namespace, so MPI traffic between hosts really crosses TCP over veth
# links (and can be cut). Used with deploy/netns-agent (mpirun's launch agent)
# and deploy/netns-mpirun (mpirun with the right flags). Needs root.
#
# Usage:
#   netns-cluster.sh up N [--prefix NAME] [--subnet A.B.C]
#   netns-cluster.sh down            [--prefix NAME]
#   netns-cluster.sh cut  HOST       [--prefix NAME]
#   netns-cluster.sh heal HOST       [--prefix NAME]
#   netns-cluster.sh hostfile K      [--prefix NAME] [--names]
#   netns-cluster.sh hosts           [--prefix NAME]   (path of the hosts map)
#   netns-cluster.sh exec HOST CMD...  (runs CMD in HOST; prefix from DCNN_NETNS_PREFIX)
#   netns-cluster.sh status          [--prefix NAME]
#
# Defaults: prefix "dcnn" (namespaces dcnn1..dcnnN, bridge dcnnbr0), subnet
# 10.77.0 (bridge 10.77.0.1/24, host i at 10.77.0.(10+i)). The prefix can also
# come from DCNN_NETNS_PREFIX. State lives in /run/distcnn-netns/PREFIX/
# (the hosts map "IP NAME" is /run/distcnn-netns/PREFIX/hosts; netns-agent reads
# every map under /run/distcnn-netns/).
#
# HOST may be a name (dcnn2), an index (2) or an address (10.77.0.12).
set -euo pipefail

STATE_ROOT=${DCNN_NETNS_STATE:-/run/distcnn-netns}
PREFIX=${DCNN_NETNS_PREFIX:-dcnn}
SUBNET=""          # A.B.C; empty = from state, else 10.77.0
NAMES=0

die() { echo "netns-cluster: $*" >&2; exit 1; }
log() { echo "netns-cluster: $*" >&2; }

need_root() {
    [[ $(id -u) -eq 0 ]] || die "must run as root (creates namespaces, veths and a bridge)"
}

ensure_tools() {
    if ! command -v ip >/dev/null 2>&1; then
        log "'ip' not found; installing iproute2"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 >/dev/null
    fi
    command -v ip >/dev/null 2>&1 || die "iproute2 ('ip') is required"
}

# Parse the common options out of "$@"; the positional rest goes to ARGS.
ARGS=()
parse_opts() {
    ARGS=()
    while [[ $# -gt 0 ]]; do
        case $1 in
            --prefix) [[ $# -ge 2 ]] || die "--prefix needs a value"; PREFIX=$2; shift 2 ;;
            --prefix=*) PREFIX=${1#*=}; shift ;;
            --subnet) [[ $# -ge 2 ]] || die "--subnet needs a value"; SUBNET=$2; shift 2 ;;
            --subnet=*) SUBNET=${1#*=}; shift ;;
            --names) NAMES=1; shift ;;
            --) shift; ARGS+=("$@"); break ;;
            *) ARGS+=("$1"); shift ;;
        esac
    done
    [[ $PREFIX =~ ^[a-z]([a-z0-9]{0,6}[a-z])?$ ]] \
        || die "prefix must be 1-8 lowercase letters/digits, starting and ending with a letter (interface names are limited to 15 chars)"
}

state_dir() { echo "$STATE_ROOT/$PREFIX"; }
bridge()    { echo "${PREFIX}br0"; }
veth_host() { echo "${PREFIX}v$1"; }     # host (root-namespace) end of host i
veth_peer() { echo "${PREFIX}p$1"; }     # namespace end before it is renamed to eth0
ns_name()   { echo "${PREFIX}$1"; }

# Load N and SUBNET from the state dir (after `up`).
load_state() {
    local sd; sd=$(state_dir)
    [[ -f $sd/config ]] || die "no cluster with prefix '$PREFIX' (run: $0 up N${PREFIX:+ --prefix $PREFIX})"
    # shellcheck disable=SC1091
    source "$sd/config"
    [[ -n ${N:-} && -n ${CLUSTER_SUBNET:-} ]] || die "corrupt state file $sd/config"
    SUBNET=$CLUSTER_SUBNET
}

ns_ip() { echo "$SUBNET.$((10 + $1))"; }

# Map HOST (name, index, or IP) to its index i (1..N).
host_index() {
    local h=$1 i
    if [[ $h =~ ^[0-9]+$ ]] && (( h >= 1 && h <= N )); then echo "$h"; return; fi
    for ((i = 1; i <= N; i++)); do
        if [[ $h == "$(ns_name "$i")" || $h == "$(ns_ip "$i")" ]]; then echo "$i"; return; fi
    done
    die "unknown host '$h' (cluster '$PREFIX' has ${PREFIX}1..${PREFIX}$N, $(ns_ip 1)..$(ns_ip "$N"))"
}

# Refuse a subnet that the machine already routes somewhere else.
check_subnet_free() {
    local br; br=$(bridge)
    local net="$SUBNET.0/24" clash
    clash=$( { ip -4 route show table all root "$net" 2>/dev/null
               ip -4 route show match "$net" 2>/dev/null | grep -v '^default' ; } \
             | grep -v "dev $br\b" | grep -v '^local\|^broadcast' | sort -u || true)
    if [[ -n $clash ]]; then
        die "subnet $net overlaps existing routes:"$'\n'"$clash"$'\n'"pick another with --subnet A.B.C"
    fi
    clash=$(ip -4 -o addr show | awk -v p="$SUBNET." -v br="$br" '$2 != br && index($4, p) == 1' || true)
    [[ -z $clash ]] || die "an address in $net is already in use:"$'\n'"$clash"
}

cmd_up() {
    parse_opts "$@"
    [[ ${#ARGS[@]} -eq 1 && ${ARGS[0]} =~ ^[0-9]+$ ]] || die "usage: up N [--prefix NAME] [--subnet A.B.C]"
    local want=${ARGS[0]}
    (( want >= 1 && want <= 200 )) || die "N must be 1..200"
    need_root; ensure_tools
    local sd; sd=$(state_dir)
    local requested_subnet=$SUBNET
    if [[ -f $sd/config ]]; then
        load_state
        if [[ -n $requested_subnet && $requested_subnet != "$SUBNET" ]]; then
            die "cluster '$PREFIX' already exists on $SUBNET.0/24; run down first"
        fi
        if (( want < N )); then
            log "cluster '$PREFIX' has $N hosts; shrinking to $want"
            local i
            for ((i = want + 1; i <= N; i++)); do remove_host "$i"; done
        fi
    else
        SUBNET=${requested_subnet:-10.77.0}
    fi
    [[ $SUBNET =~ ^([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})$ ]] || die "--subnet must look like 10.77.0"
    N=$want
    check_subnet_free
    mkdir -p "$sd"

    local br; br=$(bridge)
    if ! ip link show "$br" >/dev/null 2>&1; then
        ip link add name "$br" type bridge
    fi
    # The bridge should forward immediately (no STP learning delay).
    ip link set "$br" type bridge stp_state 0 forward_delay 0 2>/dev/null || true
    ip addr replace "$SUBNET.1/24" dev "$br"
    ip link set "$br" up

    local i ns vh vp ip
    for ((i = 1; i <= N; i++)); do
        ns=$(ns_name "$i"); vh=$(veth_host "$i"); vp=$(veth_peer "$i"); ip=$(ns_ip "$i")
        if ! ip netns list | awk '{print $1}' | grep -qx "$ns"; then
            ip netns add "$ns"
        fi
        if ! ip link show "$vh" >/dev/null 2>&1; then
            # A half-made pair from an interrupted run: drop the stray peer.
            ip link del "$vp" 2>/dev/null || true
            ip link add "$vh" type veth peer name "$vp"
        fi
        if ip link show "$vp" >/dev/null 2>&1; then
            ip link set "$vp" netns "$ns"
            ip -n "$ns" link set "$vp" name eth0
        fi
        ip link set "$vh" master "$br"
        ip link set "$vh" up
        ip -n "$ns" link set lo up
        ip -n "$ns" addr replace "$ip/24" dev eth0
        ip -n "$ns" link set eth0 up
        ip -n "$ns" route replace default via "$SUBNET.1" dev eth0
        # Its own hostname, for processes started through netns-agent (which
        # enters this UTS namespace when it exists).
        ensure_uts "$i"
    done

    {
        echo "N=$N"
        echo "CLUSTER_SUBNET=$SUBNET"
    } >"$sd/config"
    {
        echo "# distcnn netns cluster '$PREFIX' (bridge $br $SUBNET.1/24): IP NAME"
        echo "$SUBNET.1 ${PREFIX}-head"
        for ((i = 1; i <= N; i++)); do echo "$(ns_ip "$i") $(ns_name "$i")"; done
    } >"$sd/hosts"
    # /etc/netns/NS/hosts is bind-mounted over /etc/hosts by `ip netns exec`,
    # so names resolve inside every host (the root namespace is left alone).
    for ((i = 1; i <= N; i++)); do
        ns=$(ns_name "$i")
        mkdir -p "/etc/netns/$ns"
        { echo "127.0.0.1 localhost"; echo "::1 localhost ip6-localhost ip6-loopback"
          tail -n +2 "$sd/hosts"; } >"/etc/netns/$ns/hosts"
    done
    log "up: $N hosts on $br ($SUBNET.0/24); hosts map: $sd/hosts"
    cmd_status_inner
}

# A persistent UTS namespace per host so that gethostname() says dcnnI.
ensure_uts() {
    local i=$1 ns f; ns=$(ns_name "$i")
    f="$(state_dir)/uts/$ns"
    command -v unshare >/dev/null 2>&1 || return 0
    if [[ -e $f ]] && nsenter --uts="$f" true 2>/dev/null; then return 0; fi
    mkdir -p "$(state_dir)/uts"
    # A bind mount needs a private-propagation parent (as ip netns does with /run/netns).
    if ! findmnt -n "$(state_dir)/uts" >/dev/null 2>&1; then
        mount --bind "$(state_dir)/uts" "$(state_dir)/uts"
        mount --make-private "$(state_dir)/uts"
    fi
    : >"$f"
    if ! unshare --uts="$f" hostname "$ns" 2>/dev/null; then
        rm -f "$f"   # not supported here: hosts keep the machine's hostname
    fi
}

remove_host() {
    local i=$1 ns vh f; ns=$(ns_name "$i"); vh=$(veth_host "$i")
    # Kill whatever still runs inside the namespace (only processes in it).
    if ip netns list | awk '{print $1}' | grep -qx "$ns"; then
        local pids; pids=$(ip netns pids "$ns" 2>/dev/null || true)
        if [[ -n $pids ]]; then
            # shellcheck disable=SC2086
            kill -9 $pids 2>/dev/null || true
            sleep 0.2
        fi
        ip netns del "$ns" 2>/dev/null || true
    fi
    ip link del "$vh" 2>/dev/null || true
    rm -rf "/etc/netns/$ns"
    f="$(state_dir)/uts/$ns"
    if [[ -e $f ]]; then umount "$f" 2>/dev/null || true; rm -f "$f"; fi
}

cmd_down() {
    parse_opts "$@"
    [[ ${#ARGS[@]} -eq 0 ]] || die "usage: down [--prefix NAME]"
    need_root; ensure_tools
    local sd; sd=$(state_dir)
    local n=0
    if [[ -f $sd/config ]]; then load_state; n=$N; fi
    # Also sweep namespaces/veths matching the prefix that the state may not know about.
    local i ns
    for ns in $(ip netns list | awk '{print $1}' | grep -E "^${PREFIX}[0-9]+$" || true); do
        i=${ns#"$PREFIX"}; (( i > n )) && n=$i
    done
    for ((i = 1; i <= n; i++)); do remove_host "$i"; done
    ip link del "$(bridge)" 2>/dev/null || true
    if [[ -d $sd/uts ]]; then umount "$sd/uts" 2>/dev/null || true; fi
    rm -rf "$sd"
    rmdir "$STATE_ROOT" 2>/dev/null || true
    rmdir /etc/netns 2>/dev/null || true   # only if empty (we may have created it)
    log "down: cluster '$PREFIX' removed"
}

cmd_cut_heal() {
    local what=$1; shift
    parse_opts "$@"
    [[ ${#ARGS[@]} -eq 1 ]] || die "usage: $what HOST [--prefix NAME]"
    need_root; load_state
    local i; i=$(host_index "${ARGS[0]}")
    local vh; vh=$(veth_host "$i")
    if [[ $what == cut ]]; then
        # Downing the root-side end drops every frame in both directions; the
        # namespace's eth0 sees NO-CARRIER. Processes keep running (like a
        # host whose cable was pulled); TCP peers see silence, not a reset.
        ip link set "$vh" down
        log "cut $(ns_name "$i") ($(ns_ip "$i")): $vh down"
    else
        ip link set "$vh" up
        log "healed $(ns_name "$i") ($(ns_ip "$i")): $vh up"
    fi
}

cmd_hostfile() {
    parse_opts "$@"
    [[ ${#ARGS[@]} -le 1 ]] || die "usage: hostfile K [--names] [--prefix NAME]"
    local k=${ARGS[0]:-1}
    [[ $k =~ ^[0-9]+$ ]] && (( k >= 1 )) || die "K (slots per host) must be a positive integer"
    load_state
    local i
    for ((i = 1; i <= N; i++)); do
        if (( NAMES )); then echo "$(ns_name "$i") slots=$k"; else echo "$(ns_ip "$i") slots=$k"; fi
    done
}

cmd_hosts() {
    parse_opts "$@"
    load_state
    echo "$(state_dir)/hosts"
}

cmd_exec() {
    # exec HOST CMD... — run CMD in that host (same path as mpirun's agent).
    [[ $# -ge 2 ]] || die "usage: exec HOST CMD..."
    local h=$1; shift
    load_state
    local i; i=$(host_index "$h")
    h=$(ns_name "$i")
    local here; here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
    exec "$here/netns-agent" --argv "$h" "$@"
}

cmd_status_inner() {
    local br; br=$(bridge)
    echo "cluster '$PREFIX': $N hosts, bridge $br $SUBNET.1/24 ($(cat "/sys/class/net/$br/operstate" 2>/dev/null || echo missing))"
    local i ns vh st addr nproc flags
    for ((i = 1; i <= N; i++)); do
        ns=$(ns_name "$i"); vh=$(veth_host "$i")
        if ! ip netns list | awk '{print $1}' | grep -qx "$ns"; then
            printf '  %-10s %-14s %s\n' "$ns" "$(ns_ip "$i")" "MISSING namespace"; continue
        fi
        if flags=$(ip -o link show "$vh" 2>/dev/null); then
            flags=$(sed -n 's/^[^<]*<\([^>]*\)>.*/\1/p' <<<"$flags")
            if [[ ,$flags, == *,UP,* ]]; then st="connected"; else st="cut"; fi
        else
            st="MISSING-veth"
        fi
        addr=$(ip -n "$ns" -4 -o addr show dev eth0 2>/dev/null | awk '{print $4}' | head -1)
        nproc=$(ip netns pids "$ns" 2>/dev/null | wc -l)
        printf '  %-10s %-18s %-10s processes=%s\n' "$ns" "${addr:-no-address}" "$st" "$nproc"
    done
}

cmd_status() {
    parse_opts "$@"
    local sd; sd=$(state_dir)
    if [[ ! -f $sd/config ]]; then
        echo "cluster '$PREFIX': down"
        local stray; stray=$(ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^${PREFIX}[0-9]+$" || true)
        [[ -z $stray ]] || echo "  stray namespaces (run down): $(tr '\n' ' ' <<<"$stray")"
        return 0
    fi
    load_state
    cmd_status_inner
}

main() {
    [[ $# -ge 1 ]] || { sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
    local sub=$1; shift
    case $sub in
        up) cmd_up "$@" ;;
        down) cmd_down "$@" ;;
        cut|heal) cmd_cut_heal "$sub" "$@" ;;
        hostfile) cmd_hostfile "$@" ;;
        hosts) cmd_hosts "$@" ;;
        exec) cmd_exec "$@" ;;
        status) cmd_status "$@" ;;
        -h|--help|help) sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//' ;;
        *) die "unknown subcommand '$sub' (up, down, cut, heal, hostfile, hosts, exec, status)" ;;
    esac
}

main "$@"
