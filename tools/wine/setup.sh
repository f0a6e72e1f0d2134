#!/usr/bin/env bash
# Prepares the Wine prefix the Windows build's tests run in (see
# README.md, "Development"). Idempotent: every step is skipped
# when already done, so tools/wine/runner.sh may call it before any run.
#
#   1. create the prefix once (wineboot --init, then wait for the server);
#   2. build the bcryptprimitives.dll shim (shim.c: Rust's std needs
#      ProcessPrng, Wine 8 lacks it) and copy it into system32;
#   3. start a persistent wineserver and warm it up with one process, both
#      detached from our stdio: Wine's background processes (wineserver,
#      services.exe ...) inherit the stdio of whoever starts them, and a pipe
#      held open by them makes `cargo test | tee log` never end. A new
#      session's services get WINEDEBUG=-all,+eventlog and a log file as
#      stderr (see $services_log in env.sh).
#
# Environment: WINEPREFIX (default ~/.wine-wininetd). WINEARCH=win64 and
# WINEDEBUG=-all are forced for the setup's own Wine processes.
# Stop the session with `WINEPREFIX=... wineserver -k`.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=tools/wine/env.sh
source "$here/env.sh"
export WINEDEBUG=-all
system32="$WINEPREFIX/drive_c/windows/system32"
state="$WINEPREFIX/.wininetd" # what this script built or marked as done

# One setup at a time: cargo may start several runners at once, and so may
# several engineers sharing the prefix.
exec 9>"$WINEPREFIX.setup-lock"
flock 9

log() { printf 'tools/wine/setup.sh: %s\n' "$*" >&2; }

# Runs "$@" with stdin on /dev/null, stdout and stderr on $out (default
# /dev/null), and every other fd closed: the Wine processes it may start
# outlive this script, and must hold neither our lock (fd 9) nor any pipe of
# whoever called us.
detached() {
    local out="${out:-/dev/null}"
    (
        for fd in /proc/"$BASHPID"/fd/*; do
            fd="${fd##*/}"
            if ((fd > 2)); then eval "exec $fd>&-" 2>/dev/null || true; fi
        done
        exec "$@" </dev/null >>"$out" 2>&1
    )
}

# 1. The prefix. The marker is written last, so an interrupted init is redone.
if [[ ! -e "$state/prefix-ready" ]]; then
    log "creating the Wine prefix $WINEPREFIX (about 15 s, once)"
    mkdir -p "$WINEPREFIX"
    : >"$WINEPREFIX.setup.log"
    out="$WINEPREFIX.setup.log" detached "$wine" wineboot --init || {
        log "wineboot --init failed, see $WINEPREFIX.setup.log"
        exit 1
    }
    wineserver -w
    mkdir -p "$state"
    touch "$state/prefix-ready"
fi

# 2. The shim, rebuilt when its source changes, copied when system32 lacks
#    it or holds another build.
dll="$state/bcryptprimitives.dll"
if [[ ! -e "$dll" || "$here/shim.c" -nt "$dll" || "$here/shim.def" -nt "$dll" ]]; then
    x86_64-w64-mingw32-gcc -shared -O2 -Wall -Werror -o "$dll.tmp" \
        "$here/shim.c" "$here/shim.def" -ladvapi32
    mv "$dll.tmp" "$dll"
fi
if ! cmp -s "$dll" "$system32/bcryptprimitives.dll"; then
    cp "$dll" "$system32/bcryptprimitives.dll.tmp"
    mv "$system32/bcryptprimitives.dll.tmp" "$system32/bcryptprimitives.dll"
fi

# 3. The session. The warm-up process is the first of a new session, so
#    services.exe and the services it starts inherit its environment and
#    stderr; in a running session it only checks that Wine starts.
mkdir -p "$(dirname "$services_log")"
if ! server_running; then
    printf 'tools/wine/setup.sh: new Wine session %s\n' "$(date -u +%FT%TZ)" >"$services_log"
    detached wineserver -p
    WINEDEBUG=-all,+eventlog out="$services_log" detached "$wine" cmd /c exit
else
    detached "$wine" cmd /c exit
fi
