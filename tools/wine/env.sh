# Sourced by setup.sh and runner.sh: the Wine environment the Windows build's
# tests run in (README.md, "Development").

WINEPREFIX="${WINEPREFIX:-$HOME/.wine-wininetd}"
export WINEPREFIX="${WINEPREFIX%/}" # its path names the setup lock
export WINEARCH=win64
wine=/usr/lib/wine/wine64

# Where the Wine session's services (services.exe and every service it
# starts, wininetd among them) write their Wine debug output: setup.sh starts
# them with WINEDEBUG=-all,+eventlog and their stderr here, so that a test
# can see the Event Log calls of the wininetd service (ReportEventW trace
# lines; Wine stores no events). Wine writes a process's debug output to the
# Unix stderr it inherited, never to the Windows stderr handle it was given,
# so this is the only place a test can read them from. Inside Wine it is
# C:\wininetd-tests\services.log.
services_log="$WINEPREFIX/drive_c/wininetd-tests/services.log"

# Whether a wineserver runs for this prefix. Its socket is
# /tmp/DIR/server-DEV-INODE/socket, DEV and INODE those of the prefix in hex;
# DIR is .wine-UID upstream, a random wine-XXXXXX on Debian.
server_running() {
    local id
    id="$(stat -c '%D-%i' "$WINEPREFIX" 2>/dev/null)" || return 1
    local dev="${id%-*}" inode="${id#*-}"
    compgen -G "/tmp/*wine*/server-$dev-$(printf '%x' "$inode")/socket" >/dev/null
}
