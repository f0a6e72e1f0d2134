#!/usr/bin/env bash
# Cargo's runner for x86_64-pc-windows-gnu (.cargo/config.toml): runs a
# Windows test or binary under Wine 8 in the test prefix, preparing the prefix
# and starting the Wine session first when needed (tools/wine/setup.sh,
# README.md, "Development").
#
# Usage (as cargo calls it): runner.sh PROGRAM.exe [ARGS...]
# WINEPREFIX defaults to ~/.wine-wininetd; WINEDEBUG to -all (set it, e.g. to
# -all,+eventlog, to see a debug channel).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=tools/wine/env.sh
source "$here/env.sh"

# Without a running session, the exec below would start one whose
# background processes hold our stdio open (pipe hang): setup starts it
# detached.
if [[ ! -e "$WINEPREFIX/drive_c/windows/system32/bcryptprimitives.dll" ]] || ! server_running; then
    "$here/setup.sh"
fi

export WINEDEBUG="${WINEDEBUG:--all}"
exec "$wine" "$@"
