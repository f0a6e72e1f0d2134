#!/usr/bin/env bash
# wininetd's benchmark suite: starts wininetd and each inetd-style server
# Debian packages on loopback, serving the same tiny programs, measures them
# side by side and writes bench/RESULTS.md. See bench/README.md.
#
#   bench/run.sh            the full suite (about 35 minutes)
#   bench/run.sh --quick    a quick pass (about 5 minutes)
#   bench/run.sh --suite kinds   only the built-ins, UDP and wait mode
#   bench/run.sh --suite tls     only TLS and the PROXY protocol
#
# Everything listens on 127.0.0.1 and every client connects there; every
# measurement is bounded in time and count; every server is stopped by its
# pid. Needs Linux; root to install missing packages and for the per-server
# cgroups that give exact CPU times (without them it falls back to coarser
# figures and says so).
set -euo pipefail

usage() {
    cat <<'EOF'
usage: bench/run.sh [--quick] [--runs N] [--note TEXT] [--out FILE] [--servers LIST]
                    [--suite LIST]

  --quick          short windows and fewer runs (about 5 minutes)
  --runs N         runs of each figure (median reported; default 5, quick 3)
  --suite LIST     comma-separated parts to run (default: all three):
                   main  - programs served over TCP (sessions, latency, CPU,
                           held sessions, bulk, idle memory, spawn ceiling)
                   kinds - built-ins over TCP and UDP, and in.tftpd in UDP
                           wait mode, against xinetd (and socat for UDP)
                   tls   - TLS termination against stunnel4 and socat
                           (sessions, bulk), and the PROXY protocol v2
  --note TEXT      a line for RESULTS.md (say if the machine was busy)
  --out FILE       where to write the report (default bench/RESULTS.md)
  --servers LIST   comma-separated subset of: wininetd wininetd-static
                   xinetd tcpserver tcpsvd socat systemd-socket-activate
                   wininetd+log wininetd-before stunnel (tls suite only)

environment:
  WININETD=PATH        measure this wininetd binary instead of building one
  WININETD_STATIC=PATH the static (musl) build to measure as wininetd-static
  WININETD_BEFORE=PATH another wininetd build (e.g. from before a change) to
                       measure beside it as wininetd-before, in the same run
  WININETD_BEFORE_COMMIT=TEXT the commit that one was built from
  WININETD_COMMIT=TEXT the commit it was built from, for the report
  BENCH_PORT_BASE=N    first loopback port used (default 21000; ~900 above it)
EOF
}

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

mode=full
runs=""
note=""
out="$root/bench/RESULTS.md"
servers_arg=""
suite_arg=main,kinds,tls
args_given=""
while (($#)); do
    case $1 in
        --note) args_given+=" --note …" ;;
        --runs | --suite | --servers) args_given+=" $1 ${2:-}" ;;
        --out) args_given+=" $1 $(basename -- "${2:-}")" ;;
        *) args_given+=" $1" ;;
    esac
    case $1 in
        --quick) mode=quick ;;
        --runs) runs=$2; shift ;;
        --note) note=$2; shift ;;
        --out) out=$2; shift ;;
        --servers) servers_arg=$2; shift ;;
        --suite) suite_arg=$2; shift ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; exit 2 ;;
    esac
    shift
done

# Every figure's budget. A sessions run lasts warm-up + window; each session
# times out after 5 s; each generator call is killed after $call_limit s.
if [[ $mode == quick ]]; then
    runs=${runs:-3}
    window=500ms warmup=150ms
    hold=3s hold_runs=1
    bulk_bytes=$((256 << 20)) bulk_runs=3
    ceiling_window=1s
    idle_runs=1
else
    runs=${runs:-5}
    window=4s warmup=500ms
    hold=10s hold_runs=3
    bulk_bytes=$((1 << 30)) bulk_runs=9
    ceiling_window=3s
    idle_runs=3
fi
held_sessions=1000
concurrencies=(1 8 64)
# The other kinds of services: tftp transfers are the noisiest figure.
if [[ $mode == quick ]]; then tftp_runs=3; else tftp_runs=9; fi
tftp_bytes=$((10 << 20))
# A UDP client waits this long for a reply before it sends its next
# datagram (the reply still counts if it comes later).
udp_loss_timeout=10ms
children=(min static)
call_limit=120

all_servers=(wininetd wininetd-static xinetd tcpserver tcpsvd socat systemd-socket-activate wininetd+log)
# A build to hold the current one against (a change's before and after).
[[ -z ${WININETD_BEFORE:-} ]] || all_servers+=(wininetd-before)
if [[ -n $servers_arg ]]; then
    IFS=, read -r -a servers <<<"$servers_arg"
    for s in "${servers[@]}"; do
        [[ " ${all_servers[*]} stunnel " == *" $s "* ]] || { echo "run.sh: unknown server $s" >&2; exit 2; }
    done
    # stunnel serves the TLS suite alone (tls.sh reads --servers itself).
    mapfile -t servers < <(printf '%s\n' "${servers[@]}" | grep -vx stunnel)
else
    servers=("${all_servers[@]}")
fi
# wininetd+log is wininetd with its default per-session logging: it shows
# what logging costs in the sessions figures and is skipped elsewhere.
main_servers=()
for s in "${servers[@]}"; do [[ $s == wininetd+log ]] || main_servers+=("$s"); done

run_main=0 run_kinds=0 run_tls=0
IFS=, read -r -a suites <<<"$suite_arg"
for part in "${suites[@]}"; do
    case $part in
        main) run_main=1 ;;
        kinds) run_kinds=1 ;;
        tls) run_tls=1 ;;
        *) echo "run.sh: unknown suite $part (main, kinds, tls)" >&2; exit 2 ;;
    esac
done
((run_main || run_kinds || run_tls)) || { echo "run.sh: --suite names no part" >&2; exit 2; }

say() { printf '[%4ss] %s\n' "$SECONDS" "$*" >&2; }
die() { echo "run.sh: $*" >&2; exit 1; }

[[ $(uname -s) == Linux ]] || die "the suite runs on Linux"

# --- Tools ---------------------------------------------------------------

# command → Debian package
declare -A package_of=(
    [xinetd]=xinetd [tcpserver]=ucspi-tcp [tcpsvd]=ipsvd [socat]=socat
    [systemd-socket-activate]=systemd [gcc]=gcc [strace]=strace [timeout]=coreutils
    [in.tftpd]=tftpd-hpa [tftp]=tftp-hpa [stunnel4]=stunnel4 [openssl]=openssl
)
export PATH=$PATH:/usr/sbin:/sbin
missing=()
for tool in "${!package_of[@]}"; do
    command -v "$tool" >/dev/null || missing+=("${package_of[$tool]}")
done

# install_packages PKG...: apt-get install, with no service started. xinetd
# and tftpd-hpa start a system-wide daemon when installed (tftpd-hpa on
# port 69): the suite starts only its own servers, so while it installs,
# a policy-rc.d (invoke-rc.d's and deb-systemd-invoke's hook) denies every
# start, unless the machine's own already does; the machine's file, if
# any, is put back.
install_packages() {
    local policy=/usr/sbin/policy-rc.d saved="" ours=0 status=0 rc=0
    if [[ -x $policy ]]; then "$policy" xinetd start >/dev/null 2>&1 || rc=$?; fi
    if ((rc != 101)); then
        if [[ -e $policy ]]; then
            saved=$(mktemp /usr/sbin/policy-rc.d.wininetd-bench.XXXXXX)
            cp -p "$policy" "$saved"
        fi
        printf '#!/bin/sh\n# bench/run.sh: no service starts while it installs packages\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        ours=1
    fi
    {
        DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
                "$@" >/dev/null
    } || status=$?
    if ((ours)); then
        if [[ -n $saved ]]; then mv "$saved" "$policy"; else rm -f "$policy"; fi
    fi
    return "$status"
}

if ((${#missing[@]})); then
    ((EUID == 0)) || die "missing packages (run as root to install them): ${missing[*]}"
    say "installing ${missing[*]}"
    install_packages "${missing[@]}" || die "could not install ${missing[*]}"
fi

# 1,000 held sessions need 1,000 descriptors on the client side, and as many
# on a relaying server's.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
(($(ulimit -n) >= 4 * held_sessions)) || die "ulimit -n is $(ulimit -n): too low for $held_sessions sessions"

tmp=$(mktemp -d /tmp/wininetd-bench.XXXXXX)
mkdir -p "$tmp/bin" "$tmp/conf" "$tmp/log" "$tmp/strace"
results=$tmp/results.txt
: >"$results"

# --- Build ---------------------------------------------------------------

target=${CARGO_TARGET_DIR:-$root/target}
if [[ -z ${WININETD:-} ]]; then
    say "building wininetd and the generator (release)"
    cargo build --release --quiet --bin wininetd
    WININETD=$target/release/wininetd
    WININETD_COMMIT=${WININETD_COMMIT:-$(git -C "$root" describe --always --dirty 2>/dev/null || echo unknown)}
else
    say "measuring $WININETD"
fi
cargo build --release --quiet -p wininetd-bench
gen=$target/release/wininetd-bench
[[ -x $WININETD ]] || die "no wininetd binary at $WININETD"

# wininetd-static is the same code linked statically with musl: no shared
# library to map, so about half the idle memory (README, "Static build").
if ((run_main)) && [[ " ${servers[*]} " == *" wininetd-static "* && -z ${WININETD_STATIC:-} ]]; then
    musl=$(uname -m)-unknown-linux-musl
    if rustup target list --installed 2>/dev/null | grep -qx "$musl" ||
        { ((EUID == 0)) && rustup target add "$musl" >/dev/null 2>&1; }; then
        say "building wininetd for $musl (release)"
        cargo build --release --quiet --target "$musl" --bin wininetd
        WININETD_STATIC=$target/$musl/release/wininetd
    else
        say "no $musl target: wininetd-static is left out"
        mapfile -t servers < <(printf '%s\n' "${servers[@]}" | grep -vx wininetd-static)
        mapfile -t main_servers < <(printf '%s\n' "${main_servers[@]}" | grep -vx wininetd-static)
    fi
fi

# The children: built here so that every server runs the very same files.
gcc -Os -static -nostdlib -fno-stack-protector -fno-pie -no-pie \
    -o "$tmp/bin/bench-min" bench/children/min.c
gcc -O2 -static -o "$tmp/bin/bench-static" bench/children/static.c
gcc -O2 -static -o "$tmp/bin/bench-echo" bench/children/echo.c
for child in min static; do
    [[ $("$tmp/bin/bench-$child") == hello ]] || die "bench-$child does not say hello"
done

# --- Cgroups: exact CPU time for each server's whole process tree --------

cg_root=""
cg_kind=none
v2=$(awk '$3 == "cgroup2" { print $2; exit }' /proc/self/mounts)
v1=$(awk '$3 == "cgroup" && $4 ~ /(^|,)cpuacct(,|$)/ { print $2; exit }' /proc/self/mounts)
for candidate in ${v2:+"$v2"} ${v1:+"$v1"}; do
    if mkdir "$candidate/wininetd-bench.$$" 2>/dev/null; then
        cg_root=$candidate/wininetd-bench.$$
        [[ $candidate == "$v2" ]] && cg_kind="cgroup v2 (cpu.stat)" || cg_kind="cgroup v1 (cpuacct.usage)"
        break
    fi
done
[[ -n $cg_root ]] || say "no cgroup available: tree CPU falls back to cutime (coarse)"

make_cgroup() {
    [[ -n $cg_root ]] || return 0
    local dir=$cg_root/$1
    mkdir -p "$dir" && echo "$dir"
}

# --- Starting and stopping servers ----------------------------------------

declare -A pid_for=() cg_for=() cmd_for=()
started=()
trace=""

# launch NAME CGROUP CMD...: starts CMD in the background (in CGROUP, under
# strace when $trace is set); sets $launched to its pid.
launch() {
    local name=$1 cg=$2
    shift 2
    local log=$tmp/log/$name.log
    if [[ -n $trace ]]; then
        set -- strace -f -qq -e trace=network -o "$tmp/strace/$name.${#started[@]}" -- "$@"
    fi
    if [[ -n $cg ]]; then
        # shellcheck disable=SC2016
        bash -c 'echo $$ >"$1/cgroup.procs" || exit 1; shift; exec "$@"' launch "$cg" "$@" \
            </dev/null >>"$log" 2>&1 &
    else
        "$@" </dev/null >>"$log" 2>&1 &
    fi
    launched=$!
    started+=("$launched")
}

program_of() {
    case $1 in
        min) echo "$tmp/bin/bench-min" ;;
        static | static2) echo "$tmp/bin/bench-static" ;;
        echo | relay) echo "$tmp/bin/bench-echo" ;;
    esac
}

# start_server NAME BASE SERVICE...: starts server NAME with each SERVICE
# (min, static, echo, static2; and for wininetd relay: echo with
# stdio = "pipe") on ports BASE, BASE+1...; sets pid_for[NAME:SERVICE].
start_server() {
    local name=$1 base=$2
    shift 2
    local services=("$@") cg="" i port prog s
    [[ -n $trace ]] || cg=$(make_cgroup "$name")
    cg_for[$name]=$cg
    for ((i = 0; i < ${#services[@]}; i++)); do
        port=$((base + i))
        if "$gen" wait-listen --port "$port" --timeout 0s 2>/dev/null; then
            die "port $port is already in use (set BENCH_PORT_BASE)"
        fi
    done
    case $name in
        wininetd | wininetd-static | wininetd+log | wininetd-before)
            local conf=$tmp/conf/$name.${base}.toml
            {
                echo "max_sessions = 8192"
                echo "[defaults]"
                echo "backlog = 1024"
                for ((i = 0; i < ${#services[@]}; i++)); do
                    printf '[[service]]\nname = "%s"\nlisten = "127.0.0.1:%d"\ncommand = ["%s"]\n' \
                        "${services[i]}" $((base + i)) "$(program_of "${services[i]}")"
                    if [[ ${services[i]} == relay ]]; then echo 'stdio = "pipe"'; fi
                done
            } >"$conf"
            if [[ $name == wininetd ]]; then
                launch "$name" "$cg" env WININETD_LOG=warn "$WININETD" --cfgfile "$conf"
                cmd_for[$name]="WININETD_LOG=warn wininetd --cfgfile CONF.toml (max_sessions = 8192, backlog = 1024; no rate limit)"
            elif [[ $name == wininetd-before ]]; then
                launch "$name" "$cg" env WININETD_LOG=warn "$WININETD_BEFORE" --cfgfile "$conf"
                cmd_for[$name]="WININETD_LOG=warn wininetd --cfgfile CONF.toml (as wininetd; the build of commit ${WININETD_BEFORE_COMMIT:-unknown})"
            elif [[ $name == wininetd-static ]]; then
                launch "$name" "$cg" env WININETD_LOG=warn "$WININETD_STATIC" --cfgfile "$conf"
                cmd_for[$name]="WININETD_LOG=warn wininetd --cfgfile CONF.toml (as wininetd; the static build, --target $(uname -m)-unknown-linux-musl)"
            else
                launch "$name" "$cg" "$WININETD" --debug --cfgfile "$conf"
                cmd_for[$name]="wininetd --debug --cfgfile CONF.toml (as above; its default per-session log lines, to a file)"
            fi
            for s in "${services[@]}"; do pid_for[$name:$s]=$launched; done
            ;;
        xinetd)
            local conf=$tmp/conf/xinetd.$base.conf
            {
                cat <<EOF
defaults
{
    instances      = UNLIMITED
    per_source     = UNLIMITED
    cps            = 1000000 1
    log_type       = FILE $tmp/log/xinetd.services.log
    log_on_success =
    log_on_failure =
}
EOF
                for ((i = 0; i < ${#services[@]}; i++)); do
                    cat <<EOF
service bench-${services[i]}
{
    type        = UNLISTED
    socket_type = stream
    protocol    = tcp
    wait        = no
    user        = $(id -un)
    bind        = 127.0.0.1
    port        = $((base + i))
    server      = $(program_of "${services[i]}")
    flags       = REUSE NOLIBWRAP
}
EOF
                done
            } >"$conf"
            launch "$name" "$cg" xinetd -dontfork -f "$conf"
            cmd_for[$name]="xinetd -dontfork -f CONF: instances = UNLIMITED, per_source = UNLIMITED, cps = 1000000 1, flags = REUSE NOLIBWRAP, log_on_success/failure empty, bind = 127.0.0.1"
            for s in "${services[@]}"; do pid_for[$name:$s]=$launched; done
            ;;
        tcpserver | tcpsvd | socat | systemd-socket-activate)
            for ((i = 0; i < ${#services[@]}; i++)); do
                port=$((base + i))
                prog=$(program_of "${services[i]}")
                case $name in
                    tcpserver)
                        launch "$name" "$cg" tcpserver -RHl0 -c 2000 -b 1024 127.0.0.1 "$port" "$prog"
                        cmd_for[$name]="tcpserver -RHl0 -c 2000 -b 1024 127.0.0.1 PORT PROG (one process per port)"
                        ;;
                    tcpsvd)
                        launch "$name" "$cg" tcpsvd -l 0 -c 2000 -b 1024 127.0.0.1 "$port" "$prog"
                        cmd_for[$name]="tcpsvd -l 0 -c 2000 -b 1024 127.0.0.1 PORT PROG (one process per port)"
                        ;;
                    socat)
                        launch "$name" "$cg" socat -b 131072 \
                            "TCP-LISTEN:$port,bind=127.0.0.1,reuseaddr,fork,backlog=1024" "EXEC:$prog"
                        cmd_for[$name]="socat -b 131072 TCP-LISTEN:PORT,bind=127.0.0.1,reuseaddr,fork,backlog=1024 EXEC:PROG (one process per port; relays through a socket pair)"
                        ;;
                    systemd-socket-activate)
                        launch "$name" "$cg" env SYSTEMD_LOG_LEVEL=warning \
                            systemd-socket-activate --inetd -a -l "127.0.0.1:$port" "$prog"
                        cmd_for[$name]="SYSTEMD_LOG_LEVEL=warning systemd-socket-activate --inetd -a -l 127.0.0.1:PORT PROG (one process per port)"
                        ;;
                esac
                pid_for[$name:${services[i]}]=$launched
            done
            ;;
        *) die "no such server: $name" ;;
    esac
    for ((i = 0; i < ${#services[@]}; i++)); do
        "$gen" wait-listen --port $((base + i)) --timeout 10s ||
            die "$name did not listen on $((base + i)); its log: $(tail -5 "$tmp/log/$name.log")"
    done
}

# stop_pid PID: SIGTERM, then SIGKILL after 5 s. Under strace, the traced
# server (strace's child) is the one signalled; strace ends with it.
stop_pid() {
    local pid=$1 victim=$1 i
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    if [[ $(cat "/proc/$pid/comm" 2>/dev/null) == strace ]]; then
        victim=$(awk '{ print $1 }' "/proc/$pid/task/$pid/children" 2>/dev/null)
        victim=${victim:-$pid}
    fi
    kill -TERM "$victim" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$victim" "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# stop_server NAME: stops every process started for NAME.
stop_server() {
    local name=$1 key
    declare -A done_pids=()
    for key in "${!pid_for[@]}"; do
        if [[ ${key%:*} == "$name" && -z ${done_pids[${pid_for[$key]}]:-} ]]; then
            done_pids[${pid_for[$key]}]=1
            stop_pid "${pid_for[$key]}"
            unset "pid_for[$key]"
        fi
    done
}

cleanup() {
    local pid cg
    for pid in "${started[@]}"; do stop_pid "$pid"; done
    if [[ -n $cg_root ]]; then
        # What is left in our cgroups was started by this script (programs
        # of sessions cut short): end them by pid, then remove the groups.
        for cg in "$cg_root"/*/; do
            [[ -d $cg ]] || continue
            while read -r pid; do kill -KILL "$pid" 2>/dev/null || true; done <"$cg/cgroup.procs" 2>/dev/null || true
            for _ in 1 2 3 4 5 6 7 8 9 10; do rmdir "$cg" 2>/dev/null && break; sleep 0.2; done
        done
        rmdir "$cg_root" 2>/dev/null || say "could not remove $cg_root"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# measure ARGS...: one generator call, bounded in time; its line goes to the
# results. A failed call is reported and the suite goes on.
measure() {
    local line status=0
    line=$(timeout --kill-after=5 "$call_limit" "$gen" "$@") || status=$?
    if [[ -n $line ]]; then
        echo "$line" >>"$results"
        say "$line"
    fi
    ((status == 0)) || say "warning: wininetd-bench $1 failed (exit $status)"
}

# Ports: each server gets ten from its base; the held-session instances
# (+100, +200, +300), the traced ones (+700) and the idle ones (+800) use
# ranges of their own, so that no server binds a port left in TIME_WAIT.
# The other kinds use +400 and +600 (kinds.sh), TLS and PROXY +500 to +589
# (tls.sh).
port_base=${BENCH_PORT_BASE:-21000}
base_of() { # SERVER OFFSET
    local i
    for i in "${!all_servers[@]}"; do
        [[ ${all_servers[i]} == "$1" ]] && { echo $((port_base + $2 + 10 * i)); return; }
    done
}

# check_trace NAME FIELDS: reads the strace files of instance NAME and
# writes its netcheck line, with FIELDS ("server=S", and "figure=F" for
# the other kinds); stops the suite if it saw any address but loopback.
# Netlink messages are left out: they are the kernel listing the machine's
# own interface addresses to the process (glibc's getaddrinfo asks for
# them with AI_ADDRCONFIG: stunnel does, resolving its `accept`), not a
# connection to them; the line counts them (netlink=).
check_trace() {
    local name=$1 fields=$2 files calls addresses offending netlink
    files=("$tmp/strace/$name".*)
    calls=$(cat "${files[@]}" | grep -cvE '^[0-9]+ +(\+\+\+|---)' || true)
    netlink=$(cat "${files[@]}" | grep -c 'AF_NETLINK' || true)
    addresses=$(cat "${files[@]}" | grep -v 'AF_NETLINK' |
        grep -ohE 'inet_addr\("[^"]*"\)|inet_pton\(AF_INET6, "[^"]*"' |
        sed -E 's/.*"([^"]*)".*/\1/' | sort -u | paste -sd, -)
    offending=$(tr , '\n' <<<"$addresses" |
        grep -vE '^(127\.[0-9.]+|0\.0\.0\.0|::1|::|::ffff:127\.[0-9.]+)$' | paste -sd, - || true)
    if [[ -n $offending ]]; then
        echo "test=netcheck $fields calls=$calls netlink=$netlink addresses=${addresses:-none} verdict=OFF-MACHINE:$offending" >>"$results"
        die "$name touched non-loopback addresses: $offending (see $tmp/strace)"
    fi
    echo "test=netcheck $fields calls=$calls netlink=$netlink addresses=${addresses:-none} verdict=loopback-only" >>"$results"
    say "$name: $calls network calls, addresses: ${addresses:-none}"
}

load_start=$(cut -d' ' -f1-3 /proc/loadavg)
cores=$(nproc)
say "mode $mode: $runs runs, windows $window (+$warmup warm-up), suite: ${suites[*]}, servers: ${servers[*]}"

# The main suite: programs served over TCP (sections 1 to 5).
main_suite() {
    # --- 1. Network check: nothing but loopback -------------------------

    say "network check (strace -f -e trace=network)"
    trace=1
    for s in "${main_servers[@]}"; do
        base=$(base_of "$s" 700)
        start_server "$s" "$base" min static echo
        for i in 0 1; do
            measure sessions --addr "127.0.0.1:$((base + i))" --concurrency 2 --duration 300ms \
                --warmup 0s --tag test=traced --tag server="$s"
        done
        measure bulk --addr "127.0.0.1:$((base + 2))" --bytes 1000000 --tag test=traced --tag server="$s"
        stop_server "$s"
        check_trace "$s" "server=$s"
    done
    trace=""

    # --- 2. Idle memory, four services ------------------------------------

    for ((run = 1; run <= idle_runs; run++)); do
        for s in "${main_servers[@]}"; do
            base=$(base_of "$s" 800)
            start_server "$s" "$base" min static echo static2
            sleep 1
            pid_args=()
            for svc in min static echo static2; do
                [[ " ${pid_args[*]} " == *" ${pid_for[$s:$svc]} "* ]] || pid_args+=(--pid "${pid_for[$s:$svc]}")
            done
            measure mem "${pid_args[@]}" \
                --tag test=idle --tag server="$s" --tag run="$run"
            stop_server "$s"
        done
    done

    # --- 3. Long-lived sessions, each run on a fresh instance --------------

    # Fresh, so that "before" is the daemon's memory before it served anything:
    # the growth then includes what its first sessions allocate for good, the
    # conservative figure. Each run has its own ports (no TIME_WAIT to bind).
    for ((run = 1; run <= hold_runs; run++)); do
        for s in "${main_servers[@]}"; do
            base=$(base_of "$s" $((100 * run)))
            start_server "$s" "$base" echo
            measure hold --addr "127.0.0.1:$base" --count "$held_sessions" \
                --hold "$hold" --pid "${pid_for[$s:echo]}" --program bench-echo \
                --tag test=hold --tag server="$s" --tag run="$run"
            stop_server "$s"
        done
    done

    # --- 4. The measured servers ------------------------------------------

    for s in "${servers[@]}"; do
        if [[ $s == wininetd ]]; then
            start_server "$s" "$(base_of "$s" 0)" min static echo relay
        else
            start_server "$s" "$(base_of "$s" 0)" min static echo
        fi
    done
    port_of() { # SERVER SERVICE
        local offset
        case $2 in min) offset=0 ;; static) offset=1 ;; echo) offset=2 ;; relay) offset=3 ;; esac
        echo $(($(base_of "$1" 0) + offset))
    }
    cpu_args() { # SERVER SERVICE
        echo "--pid ${pid_for[$1:$2]}${cg_for[$1]:+ --cgroup ${cg_for[$1]}}"
    }

    # Sessions: runs outermost and the server order rotated each run, so that a
    # drift of the machine's load spreads over every server alike.
    for ((run = 1; run <= runs; run++)); do
        for conc in "${concurrencies[@]}"; do
            for child in "${children[@]}"; do
                n=${#servers[@]}
                for ((k = 0; k < n; k++)); do
                    s=${servers[(k + run - 1) % n]}
                    # shellcheck disable=SC2046
                    measure sessions --addr "127.0.0.1:$(port_of "$s" "$child")" \
                        --concurrency "$conc" --duration "$window" --warmup "$warmup" \
                        $(cpu_args "$s" "$child") \
                        --tag test=sessions --tag server="$s" --tag child="$child" \
                        --tag conc="$conc" --tag run="$run"
                done
            done
        done
    done

    # Bulk throughput: the server order rotated each run, as for sessions. Its
    # figures move the most from run to run (where the scheduler puts the
    # client and the program), hence more runs than the others.
    for ((run = 1; run <= bulk_runs; run++)); do
        n=${#main_servers[@]}
        for ((k = 0; k < n; k++)); do
            s=${main_servers[(k + run - 1) % n]}
            path=socket
            [[ $s == socat ]] && path=relay
            # shellcheck disable=SC2046
            measure bulk --addr "127.0.0.1:$(port_of "$s" echo)" --bytes "$bulk_bytes" \
                $(cpu_args "$s" echo) \
                --tag test=bulk --tag server="$s" --tag path="$path" --tag run="$run"
            if [[ $s == wininetd ]]; then
                # shellcheck disable=SC2046
                measure bulk --addr "127.0.0.1:$(port_of "$s" relay)" --bytes "$bulk_bytes" \
                    $(cpu_args "$s" relay) \
                    --tag test=bulk --tag server="$s" --tag path=relay --tag run="$run"
            fi
        done
    done

    for s in "${servers[@]}"; do stop_server "$s"; done

    # --- 5. The machine's spawn ceiling -----------------------------------

    for ((run = 1; run <= runs; run++)); do
        for child in "${children[@]}"; do
            for threads in 1 "$cores"; do
                measure ceiling --program "$tmp/bin/bench-$child" --threads "$threads" \
                    --duration "$ceiling_window" --warmup "$warmup" \
                    --tag test=ceiling --tag child="$child" --tag threads="$threads" --tag run="$run"
            done
        done
    done

} # main_suite

# The other kinds of services: kinds.sh, and TLS and the PROXY protocol:
# tls.sh; both use the functions above.
# shellcheck source=bench/kinds.sh
. "$root/bench/kinds.sh"
# shellcheck source=bench/tls.sh
. "$root/bench/tls.sh"

((run_main == 0)) || main_suite
((run_kinds == 0)) || kinds_suite
((run_tls == 0)) || tls_suite

# --- 7. The report ---------------------------------------------------------

load_end=$(cut -d' ' -f1-3 /proc/loadavg)
version_of() { dpkg-query -W -f '${Version}' "$1" 2>/dev/null || echo unknown; }
header=$tmp/header.md
{
    echo "# wininetd benchmark results"
    echo
    echo "Written by \`bench/run.sh$args_given\` on $(date -u '+%Y-%m-%d %H:%M UTC') ($mode mode)."
    if ((run_main)); then
        echo "Every figure is the median of $runs runs (held sessions: $hold_runs, bulk: $bulk_runs, idle memory: $idle_runs);"
        echo "session windows of $window after a $warmup warm-up; $held_sessions sessions held $hold; $((bulk_bytes >> 20)) MiB per bulk transfer."
    fi
    if ((run_kinds)); then
        echo "Built-ins, UDP and wait mode: the median of $runs runs of each UDP and built-in figure (windows of $window after a $warmup warm-up;"
        echo "a UDP client gives a datagram up after $udp_loss_timeout) and of $tftp_runs tftp transfers of $((tftp_bytes >> 20)) MiB."
    fi
    if ((run_tls)); then
        echo "TLS and PROXY protocol: the median of $runs runs of each session figure (windows of $window after a $warmup warm-up)"
        echo "and of $bulk_runs TLS transfers of $((bulk_bytes >> 20)) MiB."
    fi
    echo "How to read and reproduce it: [README.md](README.md)."
    echo
    [[ -z $note ]] || { echo "> **Note:** $note"; echo; }
    echo "## Machine"
    echo
    echo "| | |"
    echo "| --- | --- |"
    echo "| CPU | $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo) × $cores |"
    echo "| memory | $(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) |"
    # shellcheck disable=SC1091
    echo "| OS, kernel | $(. /etc/os-release && echo "$PRETTY_NAME"), Linux $(uname -r) |"
    echo "| load average (1, 5, 15 min) | at start $load_start; at end $load_end |"
    echo "| CPU accounting | $cg_kind |"
    echo
    echo "## Versions"
    echo
    echo "| | |"
    echo "| --- | --- |"
    echo "| wininetd | $("$WININETD" --version 2>&1 | head -1), commit ${WININETD_COMMIT:-unknown} |"
    [[ -z ${WININETD_STATIC:-} ]] ||
        echo "| wininetd-static | $("$WININETD_STATIC" --version 2>&1 | head -1), the same commit, linked statically with musl |"
    [[ -z ${WININETD_BEFORE:-} ]] ||
        echo "| wininetd-before | $("$WININETD_BEFORE" --version 2>&1 | head -1), commit ${WININETD_BEFORE_COMMIT:-unknown} |"
    # The peers of the parts that ran.
    ((run_main || run_kinds)) && echo "| xinetd | $(version_of xinetd) |"
    if ((run_main)); then
        echo "| tcpserver (ucspi-tcp) | $(version_of ucspi-tcp) |"
        echo "| tcpsvd (ipsvd) | $(version_of ipsvd) |"
    fi
    echo "| socat | $(version_of socat) |"
    ((run_main == 0)) || echo "| systemd-socket-activate (systemd) | $(version_of systemd) |"
    if ((run_kinds)); then
        echo "| in.tftpd (tftpd-hpa) | $(version_of tftpd-hpa) |"
        echo "| tftp (tftp-hpa) | $(version_of tftp-hpa) |"
    fi
    if ((run_tls)); then
        echo "| stunnel4 | $(version_of stunnel4), $(stunnel4 -version 2>&1 | grep -m1 -o 'Running  *with OpenSSL [^ ]*' | sed 's/  */ /g') |"
        echo "| openssl (certificate; socat's library) | $(version_of openssl) |"
    fi
    echo "| rustc | $(rustc --version 2>/dev/null || echo unknown) |"
    echo "| gcc (children) | $(gcc -dumpfullversion 2>/dev/null || echo unknown) |"
    echo
    echo "## Servers"
    echo
    if ((run_main)); then
        echo "Each serves the same three programs (\`bench/children/\`: minimal, static C, echo) on 127.0.0.1, with caps and rates above the load and no name or ident lookups:"
        echo
        echo "| server | configuration |"
        echo "| --- | --- |"
        for s in "${servers[@]}"; do echo "| $s | \`${cmd_for[$s]:-}\` |"; done
        echo
    fi
    if ((run_kinds)); then
        echo "Built-ins, UDP and wait mode: each figure has an instance of its own, on 127.0.0.1:"
        echo
        echo "| server | figure | configuration |"
        echo "| --- | --- | --- |"
        for inst in "${kinds_instances[@]}"; do
            echo "| ${inst%@*} | ${inst#*@} | \`${cmd_for[$inst]:-}\` |"
        done
        echo
    fi
    if ((run_tls)); then
        echo "TLS and PROXY protocol: each figure has an instance of its own, on 127.0.0.1, every TLS server with the same certificate (P-256, made with \`openssl req -x509 -newkey ec\`):"
        echo
        echo "| server | figure | configuration |"
        echo "| --- | --- | --- |"
        for inst in "${tls_instances[@]}"; do
            echo "| ${inst%@*} | ${inst#*@} | \`${cmd_for[$inst]:-}\` |"
        done
        echo
    fi
} >"$header"
mkdir -p "$(dirname "$out")"
"$gen" report --results "$results" --header "$header" --out "$out"
{
    if ((run_main)); then
        # Where wininetd's time goes: a profile read by hand (bench/PROFILE.md).
        echo
        cat "$root/bench/PROFILE.md"
    fi
    echo
    echo "<details><summary>Raw measurements (one line per run)</summary>"
    echo
    echo '```'
    grep -v '^test=traced' "$results"
    echo '```'
    echo
    echo "</details>"
} >>"$out"
say "wrote $out"
rm -rf "$tmp"
