# shellcheck shell=bash
# Sourced by run.sh, which sets the variables and the associative arrays
# (pid_for, cg_for, cmd_for) used here:
# shellcheck disable=SC2154,SC2034,SC2004
# bench/kinds.sh: the other kinds of services (issue 18), measured against
# the peers that serve them: built-in echo and daytime over TCP and echo
# over UDP (xinetd's internal services; socat forking a program for each
# datagram), and in.tftpd in UDP wait mode (xinetd, wait = yes). Sourced by
# run.sh, whose helpers it uses (launch, stop_server, measure, check_trace,
# base_of, say, die); run.sh calls kinds_suite.
#
# Each figure has an instance of each server of its own, so that a server
# that cannot serve one (a wininetd that does not know the configuration
# yet) is skipped for that figure only, with its reason, in the output and
# in the report.

kinds_figures=(tcp-builtins udp-echo tftp)
# SERVER@FIGURE for every instance started for the measurements; the
# report's header lists their configurations.
kinds_instances=()
declare -A kinds_up=()
# Why the last start_kind failed.
kind_reason=""

# kinds_servers_for FIGURE: the chosen servers that serve FIGURE, a line each.
kinds_servers_for() {
    local s wanted
    case $1 in
        udp-echo) wanted=(wininetd xinetd socat) ;;
        *) wanted=(wininetd xinetd) ;;
    esac
    for s in "${wanted[@]}"; do
        if [[ " ${servers[*]} " == *" $s "* ]]; then echo "$s"; fi
    done
}

# kinds_up_for FIGURE: the servers whose instance for FIGURE is serving.
kinds_up_for() {
    local s
    for s in $(kinds_servers_for "$1"); do
        if [[ -n ${kinds_up[$s@$1]:-} ]]; then echo "$s"; fi
    done
}

# kinds_port SERVER FIGURE OFFSET: the port of the figure's first service
# (TCP built-ins: echo, then daytime on the next port). OFFSET: 400 for the
# measured instances, 600 for the traced ones (run.sh's port plan).
kinds_port() {
    local add
    case $2 in
        tcp-builtins) add=0 ;;
        udp-echo) add=2 ;;
        tftp) add=3 ;;
    esac
    echo $(($(base_of "$1" "$3") + add))
}

# kinds_cpu_args SERVER FIGURE: where the generator reads its CPU time.
kinds_cpu_args() {
    local inst=$1@$2
    echo "--pid ${pid_for[$inst:$2]}${cg_for[$inst]:+ --cgroup ${cg_for[$inst]}}"
}

# escape TEXT: a field value without blanks (the report undoes it).
escape() {
    local text=${1//%/%25}
    text=${text// /%20}
    text=${text//$'\t'/%09}
    printf '%s' "${text//$'\n'/%0A}"
}

# start_kind SERVER FIGURE OFFSET: starts SERVER's instance for FIGURE and
# waits until it serves; returns 1 (the reason in $kind_reason, the
# instance stopped) if it exits or does not listen within 10 s.
start_kind() {
    local s=$1 figure=$2 offset=$3 inst=$1@$2 cg="" port conf p log_lines
    local ports udp=()
    port=$(kinds_port "$s" "$figure" "$offset")
    case $figure in
        tcp-builtins) ports=("$port" $((port + 1))) ;;
        *) ports=("$port") udp=(--udp) ;;
    esac
    for p in "${ports[@]}"; do
        if "$gen" wait-listen "${udp[@]}" --port "$p" --timeout 0s 2>/dev/null; then
            die "port $p is already in use (set BENCH_PORT_BASE)"
        fi
    done
    [[ -n $trace ]] || cg=$(make_cgroup "$inst")
    cg_for[$inst]=$cg
    mkdir -p "$tmp/conf/$offset"
    # The instance's log is appended to: what this start wrote comes after.
    log_lines=0
    [[ ! -f $tmp/log/$inst.log ]] || log_lines=$(wc -l <"$tmp/log/$inst.log")
    case $s in
        wininetd)
            conf=$tmp/conf/$offset/$s-$figure.toml
            {
                echo "max_sessions = 8192"
                case $figure in
                    tcp-builtins)
                        printf '[defaults]\nbacklog = 1024\n'
                        printf '[[service]]\nname = "tcp-echo"\nlisten = "127.0.0.1:%d"\nbuiltin = "echo"\n' "$port"
                        printf '[[service]]\nname = "daytime"\nlisten = "127.0.0.1:%d"\nbuiltin = "daytime"\n' $((port + 1))
                        ;;
                    udp-echo)
                        printf '[[service]]\nname = "udp-echo"\nlisten = "127.0.0.1:%d"\nprotocol = "udp"\nbuiltin = "echo"\n' "$port"
                        ;;
                    tftp)
                        # A UDP service with a command is served in wait mode.
                        printf '[[service]]\nname = "tftp"\nlisten = "127.0.0.1:%d"\nprotocol = "udp"\n' "$port"
                        printf 'command = ["%s", "-s", "%s", "-t", "1"]\n' "$in_tftpd" "$tftp_dir"
                        ;;
                esac
            } >"$conf"
            launch "$inst" "$cg" env WININETD_LOG=warn "$WININETD" --cfgfile "$conf"
            case $figure in
                tcp-builtins) cmd_for[$inst]='WININETD_LOG=warn wininetd --cfgfile CONF.toml: builtin = "echo", builtin = "daytime" (max_sessions = 8192, backlog = 1024)' ;;
                udp-echo) cmd_for[$inst]='WININETD_LOG=warn wininetd --cfgfile CONF.toml: protocol = "udp", builtin = "echo" (max_sessions = 8192)' ;;
                tftp) cmd_for[$inst]='WININETD_LOG=warn wininetd --cfgfile CONF.toml: protocol = "udp", command = ["in.tftpd", "-s", DIR, "-t", "1"] (wait mode)' ;;
            esac
            ;;
        xinetd)
            conf=$tmp/conf/$offset/$s-$figure.conf
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
                # xinetd finds an internal service by the service's name
                # (echo, daytime) and its id.
                case $figure in
                    tcp-builtins)
                        xinetd_service echo "type = INTERNAL UNLISTED" "id = echo-stream" \
                            "socket_type = stream" "protocol = tcp" "wait = no" "port = $port"
                        xinetd_service daytime "type = INTERNAL UNLISTED" "id = daytime-stream" \
                            "socket_type = stream" "protocol = tcp" "wait = no" "port = $((port + 1))"
                        ;;
                    udp-echo)
                        xinetd_service echo "type = INTERNAL UNLISTED" "id = echo-dgram" \
                            "socket_type = dgram" "protocol = udp" "wait = yes" "port = $port"
                        ;;
                    tftp)
                        xinetd_service tftp "type = UNLISTED" "socket_type = dgram" "protocol = udp" \
                            "wait = yes" "port = $port" "server = $in_tftpd" "server_args = -s $tftp_dir -t 1"
                        ;;
                esac
            } >"$conf"
            launch "$inst" "$cg" xinetd -dontfork -f "$conf"
            local common="instances = UNLIMITED, per_source = UNLIMITED, cps = 1000000 1, flags = REUSE NOLIBWRAP, log_on_success/failure empty, bind = 127.0.0.1"
            case $figure in
                tcp-builtins) cmd_for[$inst]="xinetd -dontfork -f CONF: service echo (type = INTERNAL, id = echo-stream) and daytime (id = daytime-stream), wait = no; $common" ;;
                udp-echo) cmd_for[$inst]="xinetd -dontfork -f CONF: service echo, type = INTERNAL, id = echo-dgram, socket_type = dgram, wait = yes; $common" ;;
                tftp) cmd_for[$inst]="xinetd -dontfork -f CONF: service tftp, socket_type = dgram, protocol = udp, wait = yes, server = in.tftpd, server_args = -s DIR -t 1; $common" ;;
            esac
            ;;
        socat)
            launch "$inst" "$cg" socat "UDP-RECVFROM:$port,bind=127.0.0.1,fork" "EXEC:$tmp/bin/bench-echo"
            cmd_for[$inst]="socat UDP-RECVFROM:PORT,bind=127.0.0.1,fork EXEC:bench-echo (a process and the echo program for each datagram)"
            ;;
        *) die "no such server for $figure: $s" ;;
    esac
    pid_for[$inst:$figure]=$launched
    for p in "${ports[@]}"; do
        if ! "$gen" wait-listen "${udp[@]}" --port "$p" --pid "$launched" --timeout 10s 2>/dev/null; then
            # The first error the server wrote (wininetd: file:line:column
            # and what is wrong), else its last line.
            kind_reason=$(tail -n +$((log_lines + 1)) "$tmp/log/$inst.log" 2>/dev/null |
                grep -m1 -i 'error' ||
                tail -n +$((log_lines + 1)) "$tmp/log/$inst.log" 2>/dev/null | tail -1 || true)
            kind_reason=${kind_reason#<[0-9]>}
            kind_reason=${kind_reason//"$tmp/conf/$offset/"/}
            kind_reason="its service did not start: ${kind_reason:-nothing listened on port $p within 10 s}"
            stop_server "$inst"
            return 1
        fi
    done
    kinds_up[$inst]=1
}

# xinetd_service NAME SETTING...: one xinetd service block, bound to
# 127.0.0.1, run as this user, no libwrap.
xinetd_service() {
    local setting
    echo "service $1"
    echo "{"
    shift
    for setting in "$@" "user = $(id -un)" "bind = 127.0.0.1" "flags = REUSE NOLIBWRAP"; do
        echo "    $setting"
    done
    echo "}"
}

# probe_kind SERVER FIGURE: one short exchange with the measured instance
# (a server may start and yet not serve the figure); returns 1, the
# instance stopped and the reason in $kind_reason, if it fails.
probe_kind() {
    local s=$1 figure=$2 port out status=0 error
    port=$(kinds_port "$s" "$figure" 400)
    case $figure in
        tcp-builtins)
            out=$(timeout --kill-after=5 "$call_limit" "$gen" sessions --addr "127.0.0.1:$port" \
                --send $'hello\n' --expect $'hello\n' --duration 200ms --warmup 0s 2>&1) || status=$?
            ;;
        udp-echo)
            out=$(timeout --kill-after=5 "$call_limit" "$gen" datagrams --addr "127.0.0.1:$port" \
                --duration 200ms --warmup 0s --loss-timeout "$udp_loss_timeout" 2>&1) || status=$?
            ;;
        tftp)
            # shellcheck disable=SC2046
            out=$(timeout --kill-after=5 "$call_limit" "$gen" tftp --addr "127.0.0.1:$port" \
                --file small.bin --source "$tftp_dir/small.bin" --out "$tmp/tftp-got.bin" \
                $(kinds_cpu_args "$s" tftp) 2>&1) || status=$?
            ;;
    esac
    ((status != 0)) || return 0
    # The generator's error, else the first failure its line names.
    error=$(grep '^wininetd-bench: ' <<<"$out" | tail -1)
    error=${error#wininetd-bench: }
    [[ $out != *first_error=* ]] || error="$error ($(sed -E 's/.*first_error=([^ ]*).*/\1/' <<<"$out" | head -1 | tr _ ' '))"
    kind_reason="its service started but did not serve: ${error:-exit $status}"
    stop_server "$s@$figure"
    unset "kinds_up[$s@$figure]"
    return 1
}

# kinds_exercise FIGURE PORT INSTANCE: a few sessions, datagrams or a small
# transfer through a traced instance (the network check).
kinds_exercise() {
    local figure=$1 port=$2 inst=$3
    case $figure in
        tcp-builtins)
            measure sessions --addr "127.0.0.1:$port" --send $'hello\n' --expect $'hello\n' \
                --concurrency 2 --duration 300ms --warmup 0s --tag test=traced --tag server="$inst"
            measure sessions --addr "127.0.0.1:$((port + 1))" --any-line \
                --concurrency 2 --duration 300ms --warmup 0s --tag test=traced --tag server="$inst"
            ;;
        udp-echo)
            measure datagrams --addr "127.0.0.1:$port" --concurrency 2 --duration 300ms \
                --warmup 0s --loss-timeout "$udp_loss_timeout" --tag test=traced --tag server="$inst"
            ;;
        tftp)
            measure tftp --addr "127.0.0.1:$port" --file small.bin --source "$tftp_dir/small.bin" \
                --out "$tmp/tftp-got.bin" --idle-timeout 0s --tag test=traced --tag server="$inst"
            ;;
    esac
}

kinds_suite() {
    local figure s inst run conc k n builtin port
    local -a up reply
    in_tftpd=$(command -v in.tftpd) || die "no in.tftpd (package tftpd-hpa)"
    # in.tftpd -s chroots into the directory as root, then reads the file as
    # nobody: the directory must be searchable and the files readable.
    tftp_dir=$tmp/tftp
    mkdir -p "$tftp_dir"
    head -c "$tftp_bytes" /dev/urandom >"$tftp_dir/bench.bin"
    head -c 65536 /dev/urandom >"$tftp_dir/small.bin"
    chmod 755 "$tftp_dir"
    chmod 644 "$tftp_dir"/*.bin

    # --- 6. Built-ins, UDP and wait mode -----------------------------------

    say "network check, built-ins, UDP and wait mode (strace -f -e trace=network)"
    trace=1
    for figure in "${kinds_figures[@]}"; do
        for s in $(kinds_servers_for "$figure"); do
            inst=$s@$figure
            if ! start_kind "$s" "$figure" 600; then
                say "$s under strace, $figure: $kind_reason"
                continue
            fi
            kinds_exercise "$figure" "$(kinds_port "$s" "$figure" 600)" "$inst"
            stop_server "$inst"
            check_trace "$inst" "server=$s figure=$figure"
        done
    done
    trace=""

    for figure in "${kinds_figures[@]}"; do
        for s in $(kinds_servers_for "$figure"); do
            kinds_instances+=("$s@$figure")
            if ! start_kind "$s" "$figure" 400 || ! probe_kind "$s" "$figure"; then
                echo "test=skipped server=$s figure=$figure reason=$(escape "$kind_reason")" >>"$results"
                say "skipped: $s, $figure: $kind_reason"
            fi
        done
    done

    # Runs outermost and the server order rotated each run, as in the main
    # suite, so that a drift of the machine's load falls on every server.
    for ((run = 1; run <= runs; run++)); do
        for conc in "${concurrencies[@]}"; do
            mapfile -t up < <(kinds_up_for udp-echo)
            n=${#up[@]}
            for ((k = 0; k < n; k++)); do
                s=${up[(k + run - 1) % n]}
                # shellcheck disable=SC2046
                measure datagrams --addr "127.0.0.1:$(kinds_port "$s" udp-echo 400)" \
                    --concurrency "$conc" --duration "$window" --warmup "$warmup" \
                    --loss-timeout "$udp_loss_timeout" $(kinds_cpu_args "$s" udp-echo) \
                    --tag test=udp --tag server="$s" --tag conc="$conc" --tag run="$run"
            done
            mapfile -t up < <(kinds_up_for tcp-builtins)
            n=${#up[@]}
            for builtin in echo daytime; do
                # What a session sends and expects: echo, a line back;
                # daytime, any one line of text.
                case $builtin in
                    echo) reply=(--send $'hello\n' --expect $'hello\n') ;;
                    daytime) reply=(--any-line) ;;
                esac
                for ((k = 0; k < n; k++)); do
                    s=${up[(k + run - 1) % n]}
                    port=$(kinds_port "$s" tcp-builtins 400)
                    [[ $builtin == echo ]] || port=$((port + 1))
                    # shellcheck disable=SC2046
                    measure sessions --addr "127.0.0.1:$port" "${reply[@]}" \
                        --concurrency "$conc" --duration "$window" --warmup "$warmup" \
                        $(kinds_cpu_args "$s" tcp-builtins) \
                        --tag test=builtin --tag server="$s" --tag builtin="$builtin" \
                        --tag conc="$conc" --tag run="$run"
                done
            done
        done
    done

    # tftp: one transfer at a time, each from an idle server (the previous
    # in.tftpd gone: `-t 1` makes it leave 1 s after its last request,
    # where its default is to serve the socket itself for 15 minutes).
    for ((run = 1; run <= tftp_runs; run++)); do
        mapfile -t up < <(kinds_up_for tftp)
        n=${#up[@]}
        for ((k = 0; k < n; k++)); do
            s=${up[(k + run - 1) % n]}
            # shellcheck disable=SC2046
            measure tftp --addr "127.0.0.1:$(kinds_port "$s" tftp 400)" --file bench.bin \
                --source "$tftp_dir/bench.bin" --out "$tmp/tftp-got.bin" \
                $(kinds_cpu_args "$s" tftp) \
                --tag test=tftp --tag server="$s" --tag run="$run"
        done
    done

    for inst in "${kinds_instances[@]}"; do stop_server "$inst"; done
}
