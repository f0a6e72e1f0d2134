#!/usr/bin/env bash
# Writes link/hot-text.ld: the functions the release build runs at start,
# idle and serving sessions, which build.rs has the linker put side by side
# at the head of the text in a packager's build, WININETD_HOT_TEXT=1
# (bench/PROFILE.md, "Memory"); it builds and profiles that build. CI warns
# when the script has gone stale (wininetd-bench hot-text-check, and the
# test `layout`). Run it again when
# the daemon's code paths or its dependencies change much; a function it
# misses still links, only further away, so the figure it prints at the end
# (the binary's resident pages) is what tells that the script is stale.
#
#   bench/hot-text.sh [--fresh]
#
# The committed script's patterns are kept (a function a sampling profile
# happened to miss this time stays hot); --fresh starts from nothing.
#
# Profiles, all on 127.0.0.1, each bounded in time:
# - start-up and idle: callgrind, which counts every function that runs, for
#   the bench's way of running (TOML, service mode, warnings only) and the
#   classic one (flat file, --debug, a log line per session);
# - sessions: perf samples of every CPU, so that the child's own code
#   between clone and exec (in the daemon's binary) is sampled too, while
#   both daemons serve short sessions, an echo and a relay (stdio = "pipe");
#   and every page fault, whose function is the one that first ran on a
#   page not yet mapped.
# It makes two passes: the second profiles the binary linked with the
# first's script, whose page faults show what the first missed, and keeps
# the first's patterns.
# Needs valgrind, perf, gcc and binutils, and root (for perf -a); installs
# what is missing from Debian's packages.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
# Every wininetd built here is linked with link/hot-text.ld (build.rs).
export WININETD_HOT_TEXT=1
say() { printf 'hot-text: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

((EUID == 0)) || die "perf -a needs root"
missing=()
for tool in valgrind:valgrind perf:linux-perf gcc:gcc readelf:binutils; do
    command -v "${tool%%:*}" >/dev/null || missing+=("${tool#*:}")
done
if ((${#missing[@]})); then
    say "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
fi

tmp=$(mktemp -d)
started=()
cleanup() {
    local pid
    for pid in "${started[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    rm -rf "$tmp"
}
trap cleanup EXIT

cargo build --release --quiet -p wininetd-bench
bin=$root/target/release/wininetd
gen=$root/target/release/wininetd-bench
gcc -Os -static -nostdlib -fno-stack-protector -fno-pie -no-pie \
    -o "$tmp/bench-min" bench/children/min.c
gcc -O2 -static -o "$tmp/bench-echo" bench/children/echo.c

port=${BENCH_PORT_BASE:-24000}
cat >"$tmp/bench.toml" <<EOF
max_sessions = 8192
[defaults]
backlog = 1024
[[service]]
name = "min"
listen = "127.0.0.1:$port"
command = ["$tmp/bench-min"]
[[service]]
name = "echo"
listen = "127.0.0.1:$((port + 1))"
command = ["$tmp/bench-echo"]
[[service]]
name = "relay"
listen = "127.0.0.1:$((port + 2))"
command = ["$tmp/bench-echo"]
stdio = "pipe"
[[service]]
name = "min2"
listen = "127.0.0.1:$((port + 3))"
command = ["$tmp/bench-min"]
EOF
cat >"$tmp/flat.conf" <<EOF
$((port + 10)) none $tmp/bench-min
$((port + 11)) none $tmp/bench-echo
EOF

# stop PID: SIGTERM, then wait for it to go (it is our child).
stop() {
    kill -TERM "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

# command_of RUN: sets cmd to the command line of RUN (bench or flat) and
# envs to its environment (env's arguments, put before valgrind).
command_of() {
    if [[ $1 == bench ]]; then
        envs=(WININETD_LOG=warn)
        cmd=("$bin" --cfgfile "$tmp/bench.toml")
    else
        envs=(WININETD_LOG=info)
        cmd=("$bin" --debug --cfgfile "$tmp/flat.conf")
    fi
}

load() { # BASE: short sessions at 1 and 8 clients, then an echo
    "$gen" sessions --addr "127.0.0.1:$1" --concurrency 1 --duration 2s --warmup 0s >/dev/null
    "$gen" sessions --addr "127.0.0.1:$1" --concurrency 8 --duration 2s --warmup 0s >/dev/null
    "$gen" bulk --addr "127.0.0.1:$(($1 + 1))" --bytes 20000000 >/dev/null
}

# pass [MERGE]: profiles the release build as it is now linked, and writes
# link/hot-text.ld from the profiles (and MERGE's patterns).
pass() {
    local run base daemon perf_pid
    cargo build --release --quiet -p wininetd
    # 1. Start-up and idle, under callgrind (5 s each, then SIGTERM).
    for run in bench flat; do
        command_of "$run"
        env "${envs[@]}" valgrind --tool=callgrind --demangle=no \
            --callgrind-out-file="$tmp/callgrind.$run" "${cmd[@]}" \
            </dev/null >"$tmp/valgrind.$run.log" 2>&1 &
        started+=($!)
        sleep 5
        stop "${started[-1]}"
        [[ -s $tmp/callgrind.$run ]] || die "callgrind wrote nothing: $(tail -3 "$tmp/valgrind.$run.log")"
    done
    # 2. Sessions: CPU samples and page faults, across every CPU.
    for run in bench flat; do
        command_of "$run"
        env "${envs[@]}" "${cmd[@]}" </dev/null >"$tmp/$run.log" 2>&1 &
        started+=($!)
        daemon=$!
        base=$port
        [[ $run == flat ]] && base=$((port + 10))
        "$gen" wait-listen --port "$base" --timeout 5s
        perf record -q -a -e cpu-clock/freq=10000/ -e page-faults/period=1/ \
            -o "$tmp/perf.$run.data" -- sleep 9 >/dev/null 2>&1 &
        perf_pid=$!
        sleep 0.5
        load "$base"
        if [[ $run == bench ]]; then
            "$gen" bulk --addr "127.0.0.1:$((port + 2))" --bytes 20000000 >/dev/null
        fi
        wait "$perf_pid"
        stop "$daemon"
        perf script -i "$tmp/perf.$run.data" --no-demangle -F comm,ip,sym,dso \
            >"$tmp/perf.$run.txt" 2>/dev/null
    done
    "$gen" hot-text --binary "$bin" --out link/hot-text.ld ${1:+--merge "$1"} \
        --callgrind "$tmp/callgrind.bench" --callgrind "$tmp/callgrind.flat" \
        --perf "$tmp/perf.bench.txt" --perf "$tmp/perf.flat.txt"
}

keep=
if [[ ${1:-} != --fresh ]]; then
    keep=$tmp/committed.ld
    cp link/hot-text.ld "$keep"
fi
say "pass 1"
pass "$keep"
cp link/hot-text.ld "$tmp/pass1.ld"
say "pass 2"
pass "$tmp/pass1.ld"

# 3. The result: relink with it, then the binary's resident pages when idle
# and after sessions (fault-around maps 64 KiB runs around each page run).
cargo build --release --quiet -p wininetd
hot=$(readelf -SW "$bin" | awk '$2 == ".text.hot" { print $6 }')
say ".text.hot: $((16#${hot:-0} / 1024)) KiB"
resident() { # PID: KiB of the binary's mappings in its RSS
    awk -v b="$bin" '/^[0-9a-f]+-/ { m = ($6 == b) } /^Rss:/ && m { s += $2 } END { print s }' \
        "/proc/$1/smaps"
}
command_of bench
env "${envs[@]}" "${cmd[@]}" </dev/null >"$tmp/check.log" 2>&1 &
started+=($!)
daemon=$!
"$gen" wait-listen --port "$port" --timeout 5s
sleep 1
idle=$(resident "$daemon")
load "$port"
"$gen" bulk --addr "127.0.0.1:$((port + 2))" --bytes 20000000 >/dev/null
say "the binary's resident pages: $idle KiB idle, $(resident "$daemon") KiB after sessions"
stop "$daemon"
