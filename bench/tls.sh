# shellcheck shell=bash
# Sourced by run.sh, which sets the variables and the associative arrays
# (pid_for, cg_for, cmd_for) used here:
# shellcheck disable=SC2154,SC2034,SC2004
# bench/tls.sh: TLS termination and the PROXY protocol (issue 19), the
# `tls` suite. TLS: wininetd (`tls = { cert, key }`) against stunnel4
# (`exec =`, the program started for each connection) and socat
# (`OPENSSL-LISTEN:…,fork EXEC:`), every one serving the same programs
# with the same certificate: TLS 1.3 sessions per second with the minimal
# child, and bulk throughput through one session with the echo child.
# PROXY: a plain wininetd service with `proxy_protocol = "v2"`, its
# clients sending a v2 header first, against the same service without.
# Sourced by run.sh, whose helpers it uses (launch, stop_server, measure,
# check_trace, make_cgroup, say, die; escape from kinds.sh); run.sh calls
# tls_suite.
#
# Each server has an instance of its own for each figure kind (tls,
# proxy); one that does not start or does not serve (a wininetd without
# `tls`) is skipped, with its reason, in the output and in the report.

# The TLS servers, in their port order; the PROXY figure's instance comes
# after them.
tls_all=(wininetd stunnel socat)
tls_concurrencies=(1 8)
# SERVER@FIGURE for every instance started for the measurements; the
# report's header lists their configurations.
tls_instances=()
declare -A tls_up=()
tls_reason=""

# tls_servers: the chosen TLS servers (all three unless --servers names
# some), a line each.
tls_servers() {
    local s
    for s in "${tls_all[@]}"; do
        if [[ -z $servers_arg || ",$servers_arg," == *",$s,"* ]]; then echo "$s"; fi
    done
}

# tls_port SERVER FIGURE OFFSET: the instance's first port. Ports: the
# run's base + OFFSET (500: measured; 550: traced) + 10 per instance;
# a TLS instance has min then echo, the PROXY one the service with the
# header then the one without.
tls_port() {
    local i=3
    if [[ $2 == tls ]]; then
        for i in "${!tls_all[@]}"; do [[ ${tls_all[i]} == "$1" ]] && break; done
    fi
    echo $((port_base + $3 + 10 * i))
}

# tls_cpu_args INSTANCE SERVICE: where the generator reads CPU time.
tls_cpu_args() {
    echo "--pid ${pid_for[$1:$2]}${cg_for[$1]:+ --cgroup ${cg_for[$1]}}"
}

# start_tls SERVER FIGURE OFFSET: starts SERVER's instance for FIGURE (tls:
# min and echo over TLS; proxy: min with and without proxy_protocol) and
# waits until it listens; returns 1 (the reason in $tls_reason, the
# instance stopped) if it does not within 10 s.
start_tls() {
    local s=$1 figure=$2 offset=$3 inst=$1@$2 cg="" port conf p log_lines i
    local -a ports programs
    port=$(tls_port "$s" "$figure" "$offset")
    ports=("$port" $((port + 1)))
    case $figure in
        tls) programs=("$tmp/bin/bench-min" "$tmp/bin/bench-echo") ;;
        proxy) programs=("$tmp/bin/bench-min" "$tmp/bin/bench-min") ;;
    esac
    for p in "${ports[@]}"; do
        if "$gen" wait-listen --port "$p" --timeout 0s 2>/dev/null; then
            die "port $p is already in use (set BENCH_PORT_BASE)"
        fi
    done
    [[ -n $trace ]] || cg=$(make_cgroup "$inst")
    cg_for[$inst]=$cg
    mkdir -p "$tmp/conf/$offset"
    log_lines=0
    [[ ! -f $tmp/log/$inst.log ]] || log_lines=$(wc -l <"$tmp/log/$inst.log")
    case $s in
        wininetd)
            conf=$tmp/conf/$offset/$s-$figure.toml
            {
                printf 'max_sessions = 8192\n[defaults]\nbacklog = 1024\n'
                for i in 0 1; do
                    printf '[[service]]\nname = "%s-%d"\nlisten = "127.0.0.1:%d"\ncommand = ["%s"]\n' \
                        "$figure" "$i" "${ports[i]}" "${programs[i]}"
                    if [[ $figure == tls ]]; then
                        printf 'tls = { cert = "%s", key = "%s" }\n' "$tls_cert" "$tls_key"
                    elif ((i == 0)); then
                        printf 'proxy_protocol = "v2"\ntrusted_proxies = ["127.0.0.1"]\n'
                    fi
                done
            } >"$conf"
            launch "$inst" "$cg" env WININETD_LOG=warn "$WININETD" --cfgfile "$conf"
            case $figure in
                tls) cmd_for[$inst]='WININETD_LOG=warn wininetd --cfgfile CONF.toml: tls = { cert = CERT, key = KEY }, command = [PROG] (max_sessions = 8192, backlog = 1024; TLS 1.2 and 1.3, the defaults)' ;;
                proxy) cmd_for[$inst]='WININETD_LOG=warn wininetd --cfgfile CONF.toml: command = [bench-min], proxy_protocol = "v2", trusted_proxies = ["127.0.0.1"]; beside it the same service without them (max_sessions = 8192, backlog = 1024)' ;;
            esac
            pid_for[$inst:min]=$launched
            pid_for[$inst:echo]=$launched
            ;;
        stunnel)
            # exec: stunnel starts the program for each connection (on a
            # socket pair) and relays it; its log as quiet as the others'
            # (level 4, warnings: nothing per session), on stderr only.
            conf=$tmp/conf/$offset/$s-$figure.conf
            {
                printf 'foreground = yes\nsyslog = no\ndebug = 4\npid =\n'
                for i in 0 1; do
                    printf '[bench-%d]\naccept = 127.0.0.1:%d\nexec = %s\ncert = %s\nkey = %s\n' \
                        "$i" "${ports[i]}" "${programs[i]}" "$tls_cert" "$tls_key"
                done
            } >"$conf"
            launch "$inst" "$cg" stunnel4 "$conf"
            cmd_for[$inst]="stunnel4 CONF: foreground = yes, syslog = no, debug = 4, pid = (none); per service: accept = 127.0.0.1:PORT, exec = PROG, cert = CERT, key = KEY (its defaults otherwise: threads, TCP_NODELAY, TLS 1.2 and 1.3)"
            pid_for[$inst:min]=$launched
            pid_for[$inst:echo]=$launched
            ;;
        socat)
            # One process per port. nodelay: without it, the reply waits
            # for the ACK of socat's session tickets, which the client
            # delays (about 40 ms a session); stunnel sets it by default.
            for i in 0 1; do
                launch "$inst" "$cg" socat -b 131072 \
                    "OPENSSL-LISTEN:${ports[i]},bind=127.0.0.1,reuseaddr,fork,backlog=1024,nodelay,cert=$tls_cert,key=$tls_key,verify=0" \
                    "EXEC:${programs[i]}"
                if ((i == 0)); then pid_for[$inst:min]=$launched; else pid_for[$inst:echo]=$launched; fi
            done
            cmd_for[$inst]="socat -b 131072 OPENSSL-LISTEN:PORT,bind=127.0.0.1,reuseaddr,fork,backlog=1024,nodelay,cert=CERT,key=KEY,verify=0 EXEC:PROG (one process per port; a process per connection, which relays through a socket pair)"
            ;;
        *) die "no such server for $figure: $s" ;;
    esac
    for i in 0 1; do
        if [[ $i == 0 ]]; then p=${pid_for[$inst:min]}; else p=${pid_for[$inst:echo]}; fi
        if ! "$gen" wait-listen --port "${ports[i]}" --pid "$p" --timeout 10s 2>/dev/null; then
            tls_reason=$(tail -n +$((log_lines + 1)) "$tmp/log/$inst.log" 2>/dev/null |
                grep -m1 -i 'error' ||
                tail -n +$((log_lines + 1)) "$tmp/log/$inst.log" 2>/dev/null | tail -1 || true)
            tls_reason=${tls_reason#<[0-9]>}
            tls_reason=${tls_reason//"$tmp/conf/$offset/"/}
            tls_reason="its service did not start: ${tls_reason:-nothing listened on port ${ports[i]} within 10 s}"
            stop_server "$inst"
            return 1
        fi
    done
    tls_up[$inst]=1
}

# probe_tls SERVER FIGURE: one short exchange with each service of the
# measured instance; returns 1, the instance stopped and the reason in
# $tls_reason, if one fails.
probe_tls() {
    local s=$1 figure=$2 port out status=0 error
    port=$(tls_port "$s" "$figure" 500)
    case $figure in
        tls)
            out=$(timeout --kill-after=5 "$call_limit" "$gen" sessions --addr "127.0.0.1:$port" \
                --tls-cert "$tls_cert" --duration 200ms --warmup 0s 2>&1) &&
                out=$(timeout --kill-after=5 "$call_limit" "$gen" bulk --addr "127.0.0.1:$((port + 1))" \
                    --tls-cert "$tls_cert" --bytes 65536 --close-after-echo 2>&1) || status=$?
            ;;
        proxy)
            out=$(timeout --kill-after=5 "$call_limit" "$gen" sessions --addr "127.0.0.1:$port" \
                --proxy-v2 --duration 200ms --warmup 0s 2>&1) &&
                out=$(timeout --kill-after=5 "$call_limit" "$gen" sessions --addr "127.0.0.1:$((port + 1))" \
                    --duration 200ms --warmup 0s 2>&1) || status=$?
            ;;
    esac
    ((status != 0)) || return 0
    error=$(grep '^wininetd-bench: ' <<<"$out" | tail -1)
    error=${error#wininetd-bench: }
    [[ $out != *first_error=* ]] || error="$error ($(sed -E 's/.*first_error=([^ ]*).*/\1/' <<<"$out" | head -1 | tr _ ' '))"
    tls_reason="its service started but did not serve: ${error:-exit $status}"
    stop_server "$s@$figure"
    unset "tls_up[$s@$figure]"
    return 1
}

# tls_up_for FIGURE: the servers whose instance for FIGURE is serving.
tls_up_for() {
    local s
    if [[ $1 == proxy ]]; then
        [[ -z ${tls_up[wininetd@proxy]:-} ]] || echo wininetd
        return
    fi
    for s in $(tls_servers); do
        if [[ -n ${tls_up[$s@tls]:-} ]]; then echo "$s"; fi
    done
}

# tls_figures: the instances to start, SERVER FIGURE a line each.
tls_figures() {
    local s
    for s in $(tls_servers); do echo "$s tls"; done
    if [[ -z $servers_arg || ",$servers_arg," == *",wininetd,"* ]]; then echo "wininetd proxy"; fi
}

tls_suite() {
    local s figure inst run conc k n port header
    local -a up extra
    # One certificate for every server: P-256, made here, as the README's
    # example makes one.
    mkdir -p "$tmp/tls"
    tls_cert=$tmp/tls/cert.pem tls_key=$tmp/tls/key.pem
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 7 \
        -subj /CN=localhost -addext subjectAltName=DNS:localhost \
        -keyout "$tls_key" -out "$tls_cert" 2>"$tmp/log/openssl.log" ||
        die "openssl could not make the certificate: $(tail -3 "$tmp/log/openssl.log")"
    chmod 600 "$tls_key"

    # --- 8. TLS and PROXY protocol -----------------------------------------

    say "network check, TLS and PROXY protocol (strace -f -e trace=network)"
    trace=1
    while read -r s figure; do
        inst=$s@$figure
        if ! start_tls "$s" "$figure" 550; then
            say "$s under strace, $figure: $tls_reason"
            continue
        fi
        port=$(tls_port "$s" "$figure" 550)
        if [[ $figure == tls ]]; then
            measure sessions --addr "127.0.0.1:$port" --tls-cert "$tls_cert" --concurrency 2 \
                --duration 300ms --warmup 0s --tag test=traced --tag server="$inst"
            measure bulk --addr "127.0.0.1:$((port + 1))" --tls-cert "$tls_cert" --bytes 1000000 \
                --close-after-echo --tag test=traced --tag server="$inst"
        else
            measure sessions --addr "127.0.0.1:$port" --proxy-v2 --concurrency 2 \
                --duration 300ms --warmup 0s --tag test=traced --tag server="$inst"
            measure sessions --addr "127.0.0.1:$((port + 1))" --concurrency 2 \
                --duration 300ms --warmup 0s --tag test=traced --tag server="$inst"
        fi
        stop_server "$inst"
        check_trace "$inst" "server=$s figure=$figure"
    done < <(tls_figures)
    trace=""

    while read -r s figure; do
        tls_instances+=("$s@$figure")
        if ! start_tls "$s" "$figure" 500 || ! probe_tls "$s" "$figure"; then
            echo "test=tls-skipped server=$s figure=$figure reason=$(escape "$tls_reason")" >>"$results"
            say "skipped: $s, $figure: $tls_reason"
        fi
    done < <(tls_figures)

    # Sessions: runs outermost and the order rotated each run, as in the
    # other suites. The PROXY figure's two services take turns the same way.
    for ((run = 1; run <= runs; run++)); do
        for conc in "${tls_concurrencies[@]}"; do
            mapfile -t up < <(tls_up_for tls)
            n=${#up[@]}
            for ((k = 0; k < n; k++)); do
                s=${up[(k + run - 1) % n]}
                # shellcheck disable=SC2046
                measure sessions --addr "127.0.0.1:$(tls_port "$s" tls 500)" \
                    --tls-cert "$tls_cert" --concurrency "$conc" \
                    --duration "$window" --warmup "$warmup" $(tls_cpu_args "$s@tls" min) \
                    --tag test=tls --tag server="$s" --tag conc="$conc" --tag run="$run"
            done
            mapfile -t up < <(tls_up_for proxy)
            ((${#up[@]})) || continue
            for ((k = 0; k < 2; k++)); do
                header=$(((k + run) % 2))
                port=$(tls_port wininetd proxy 500)
                if ((header)); then
                    extra=(--proxy-v2) header=v2
                else
                    extra=() port=$((port + 1)) header=none
                fi
                # shellcheck disable=SC2046
                measure sessions --addr "127.0.0.1:$port" "${extra[@]}" \
                    --concurrency "$conc" --duration "$window" --warmup "$warmup" \
                    $(tls_cpu_args wininetd@proxy min) \
                    --tag test=proxy --tag server=wininetd --tag header="$header" \
                    --tag conc="$conc" --tag run="$run"
            done
        done
    done

    # Bulk through one TLS session, the order rotated each run. Our
    # close_notify goes once every byte came back: stunnel ends a session
    # at the client's and drops what the program had still to send.
    for ((run = 1; run <= bulk_runs; run++)); do
        mapfile -t up < <(tls_up_for tls)
        n=${#up[@]}
        for ((k = 0; k < n; k++)); do
            s=${up[(k + run - 1) % n]}
            # shellcheck disable=SC2046
            measure bulk --addr "127.0.0.1:$(($(tls_port "$s" tls 500) + 1))" \
                --tls-cert "$tls_cert" --bytes "$bulk_bytes" --close-after-echo \
                $(tls_cpu_args "$s@tls" echo) \
                --tag test=tls-bulk --tag server="$s" --tag run="$run"
        done
    done

    for inst in "${tls_instances[@]}"; do stop_server "$inst"; done
}
