//! The report's section on the other kinds of services (issue 18): UDP
//! built-in echo, TCP built-in echo and daytime, and `in.tftpd` in UDP wait
//! mode, each against xinetd's own (and, for UDP echo, socat's fork per
//! datagram).
//!
//! The lines carry `test=udp` (the `datagrams` generator), `test=builtin`
//! (the `sessions` generator, with `builtin=`), `test=tftp`, and
//! `test=skipped` for a figure whose server did not start (`figure=`,
//! `reason=` with `%XX` escapes, as `run.sh` writes it).

use std::fmt::Write as _;

use super::{Data, OURS, Table, num, ratio, runs_cell, server_cell};

/// The peer every target of this section is held against.
const XINETD: &str = "xinetd";
const CONCURRENCIES: [&str; 3] = ["1", "8", "64"];
const BUILTINS: [(&str, &str); 2] = [("echo", "echo"), ("daytime", "daytime")];
/// How far a tftp transfer's time may be from xinetd's and still be "equal
/// within noise": a share of xinetd's time.
const TFTP_TOLERANCE: f64 = 0.10;

/// Whether the lines hold anything for this section.
pub(super) fn present(data: &Data) -> bool {
    ["udp", "builtin", "tftp", "skipped"]
        .iter()
        .any(|t| data.runs(&[("test", t)]) > 0)
}

pub(super) fn render(data: &Data, out: &mut String) {
    out.push_str("## UDP, built-ins and wait mode\n\n");
    out.push_str(
        "The kinds of services issue 18 added, each against xinetd serving \
         the same: its internal services (`type = INTERNAL`) for the \
         built-ins, and `in.tftpd` with `wait = yes` for the wait mode. \
         Every figure is the median of its runs; the servers take turns \
         within each run.\n\n",
    );
    skipped(data, out);
    targets(data, out);
    udp(data, out);
    builtins(data, out);
    tftp(data, out);
}

/// The figures a server could not be measured for, and why.
fn skipped(data: &Data, out: &mut String) {
    let lines: Vec<String> = data
        .matching(&[("test", "skipped")])
        .map(|r| {
            let get = |k: &str| r.get(k).map_or("–", String::as_str);
            format!(
                "- **{}**, {}: skipped, {}\n",
                get("server"),
                figure_name(get("figure")),
                unescape(get("reason"))
            )
        })
        .collect();
    if lines.is_empty() {
        return;
    }
    out.push_str("Not measured (the run's output has the server's log):\n\n");
    for line in lines {
        out.push_str(&line);
    }
    out.push('\n');
}

pub(super) fn figure_name(figure: &str) -> &str {
    match figure {
        "udp-echo" => "UDP echo",
        "tcp-builtins" => "TCP built-ins",
        "tftp" => "tftp in wait mode",
        "tls" => "TLS",
        "proxy" => "PROXY protocol v2",
        other => other,
    }
}

/// Undoes `run.sh`'s escapes (`%20` for a space...): a field holds no
/// blank. A `%` not followed by two hex digits is kept as it is.
pub(super) fn unescape(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether `server` was skipped for `figure`.
fn was_skipped(data: &Data, server: &str, figure: &str) -> bool {
    data.runs(&[("test", "skipped"), ("server", server), ("figure", figure)]) > 0
}

/// In how many runs our figure met `target` against xinetd's of the same
/// run: `(met, runs)`, `None` without a run that has both.
fn runs_met(
    data: &Data,
    filter: &[(&str, &str)],
    metric: &str,
    target: impl Fn(f64, f64) -> bool,
) -> Option<(usize, usize)> {
    let value = |server: &str, run: &str| {
        let mut f = filter.to_vec();
        f.extend([("server", server), ("run", run)]);
        data.median(&f, metric)
    };
    let mut runs: Vec<&str> = data
        .matching(filter)
        .filter(|r| r.get("server").is_some_and(|s| s == OURS))
        .filter_map(|r| r.get("run").map(String::as_str))
        .collect();
    runs.sort_unstable();
    runs.dedup();
    let (mut met, mut counted) = (0, 0);
    for run in runs {
        if let (Some(ours), Some(theirs)) = (value(OURS, run), value(XINETD, run)) {
            counted += 1;
            met += usize::from(target(ours, theirs));
        }
    }
    (counted > 0).then_some((met, counted))
}

fn verdict(ok: Option<bool>) -> String {
    match ok {
        Some(true) => "yes".to_owned(),
        Some(false) => "**no**".to_owned(),
        None => "–".to_owned(),
    }
}

/// One row of the targets table.
struct Target {
    label: String,
    filter: Vec<(&'static str, &'static str)>,
    metric: &'static str,
    /// The figure's name in `test=skipped` lines.
    figure: &'static str,
    /// Whether ours met it against xinetd's.
    met: Box<dyn Fn(f64, f64) -> bool>,
}

fn targets(data: &Data, out: &mut String) {
    out.push_str(
        "Targets, against xinetd (*runs met*: in how many runs wininetd met \
         it against xinetd's figure of the same run):\n\n",
    );
    let mut t = Table::new(&["target", "wininetd", "xinetd", "ratio", "met", "runs met"]);
    let mut targets = Vec::new();
    for conc in CONCURRENCIES {
        targets.push(Target {
            label: format!("UDP echo built-in, datagrams answered/s, c={conc}: ≥ 2× xinetd"),
            filter: vec![("test", "udp"), ("conc", conc)],
            metric: "rate",
            figure: "udp-echo",
            met: Box::new(|o, x| o >= 2.0 * x),
        });
    }
    for (builtin, name) in BUILTINS {
        for conc in CONCURRENCIES {
            targets.push(Target {
                label: format!("TCP {name} built-in, sessions/s, c={conc}: ≥ 3× xinetd"),
                filter: vec![("test", "builtin"), ("builtin", builtin), ("conc", conc)],
                metric: "rate",
                figure: "tcp-builtins",
                met: Box::new(|o, x| o >= 3.0 * x),
            });
        }
    }
    targets.push(Target {
        label: format!(
            "tftp, 10 MiB through in.tftpd in wait mode, s per transfer: = xinetd (± {:.0} %)",
            TFTP_TOLERANCE * 100.0
        ),
        // A transfer that failed its check has no time worth a median.
        filter: vec![("test", "tftp"), ("ok", "yes")],
        metric: "secs",
        figure: "tftp",
        met: Box::new(|o, x| (o / x - 1.0).abs() <= TFTP_TOLERANCE),
    });
    for target in targets {
        if data.runs(&target.filter) == 0 && !was_skipped(data, OURS, target.figure) {
            continue;
        }
        let of = |server: &str| {
            let mut f = target.filter.clone();
            f.push(("server", server));
            data.median(&f, target.metric)
        };
        let (ours, theirs) = (of(OURS), of(XINETD));
        let cell = |server: &str, value: Option<f64>| {
            if value.is_none() && was_skipped(data, server, target.figure) {
                "skipped".to_owned()
            } else {
                num(value)
            }
        };
        t.row(vec![
            target.label.clone(),
            cell(OURS, ours),
            cell(XINETD, theirs),
            ratio(ours, theirs),
            verdict(ours.zip(theirs).map(|(o, x)| (target.met)(o, x))),
            runs_cell(runs_met(data, &target.filter, target.metric, &target.met)),
        ]);
    }
    t.render(out);
}

/// The servers with lines matching `filter`, in the order they appear.
fn servers_of<'a>(data: &'a Data, filter: &[(&str, &str)]) -> Vec<&'a str> {
    data.servers
        .iter()
        .map(String::as_str)
        .filter(|s| {
            let mut f = filter.to_vec();
            f.push(("server", s));
            data.runs(&f) > 0
        })
        .collect()
}

fn udp(data: &Data, out: &mut String) {
    let f = [("test", "udp")];
    if data.runs(&f) == 0 {
        return;
    }
    let first = |key: &str| {
        data.matching(&f)
            .find_map(|r| r.get(key).cloned())
            .unwrap_or_else(|| "–".to_owned())
    };
    let _ = writeln!(out, "### UDP echo\n");
    let _ = writeln!(
        out,
        "`c` sockets, each with one {}-byte datagram in flight: a socket \
         sends its next datagram when the reply came, or after {} ms without \
         one (*given up*; a reply that comes later still counts as answered, \
         *late*). Every reply is checked against what was sent. *Round trip*: \
         from the send to the reply. CPU per answered datagram as in the \
         sessions' CPU table (*own*: the daemon process; *tree*: its cgroup, \
         socat's per-datagram child and program included). Higher rate, \
         lower CPU are better.\n",
        first("size"),
        first("loss_timeout_ms"),
    );
    let mut t = Table::new(&[
        "server",
        "c",
        "datagrams/s",
        "given up %",
        "late",
        "p50 µs",
        "p99 µs",
        "own CPU µs",
        "tree CPU µs",
        "client CPU µs",
        "errors",
    ]);
    for server in servers_of(data, &f) {
        for conc in CONCURRENCIES {
            let f = [("test", "udp"), ("server", server), ("conc", conc)];
            if data.runs(&f) == 0 {
                continue;
            }
            t.row(vec![
                server_cell(server),
                conc.to_owned(),
                num(data.median(&f, "rate")),
                num(data.median(&f, "loss_pct")),
                num(data.median(&f, "late")),
                num(data.median(&f, "p50_us")),
                num(data.median(&f, "p99_us")),
                num(data.median(&f, "own_cpu_us")),
                num(data.median(&f, "tree_cpu_us")),
                num(data.median(&f, "client_cpu_us")),
                format!("{:.0}", data.sum(&f, "errors")),
            ]);
        }
    }
    t.render(out);
    out.push_str(
        "xinetd answers one datagram per wake-up of an internal datagram \
         service and then reads and discards whatever else is queued on the \
         socket, so datagrams that arrive while it answers are lost, and each \
         costs its client the time it waits before giving up. socat \
         (`UDP-RECVFROM:…,fork`) starts a process and the echo program for \
         each datagram.\n\n",
    );
}

fn builtins(data: &Data, out: &mut String) {
    let f = [("test", "builtin")];
    if data.runs(&f) == 0 {
        return;
    }
    out.push_str("### TCP built-ins\n\n");
    out.push_str(
        "Short sessions as in the sessions table: *echo*: connect, write \
         `hello` and a newline, shut our side down, read the line back, see \
         EOF; *daytime*: connect, read one line of text, see EOF. No program \
         runs; xinetd serves echo in a forked copy of itself and daytime in \
         its own process. Latency: connect to the reply's first byte. Higher \
         rate, lower latency and CPU are better.\n\n",
    );
    let mut t = Table::new(&[
        "server",
        "built-in",
        "c",
        "sessions/s",
        "p50 µs",
        "p99 µs",
        "own CPU µs",
        "tree CPU µs",
        "failed",
    ]);
    for server in servers_of(data, &f) {
        for (builtin, name) in BUILTINS {
            for conc in CONCURRENCIES {
                let f = [
                    ("test", "builtin"),
                    ("server", server),
                    ("builtin", builtin),
                    ("conc", conc),
                ];
                if data.runs(&f) == 0 {
                    continue;
                }
                t.row(vec![
                    server_cell(server),
                    name.to_owned(),
                    conc.to_owned(),
                    num(data.median(&f, "rate")),
                    num(data.median(&f, "p50_us")),
                    num(data.median(&f, "p99_us")),
                    num(data.median(&f, "own_cpu_us")),
                    num(data.median(&f, "tree_cpu_us")),
                    format!("{:.0}", data.sum(&f, "errors")),
                ]);
            }
        }
    }
    t.render(out);
}

fn tftp(data: &Data, out: &mut String) {
    let f = [("test", "tftp")];
    if data.runs(&f) == 0 {
        return;
    }
    let mib = data
        .median(&f, "bytes")
        .map_or_else(|| "–".to_owned(), |b| num(Some(b / f64::from(1 << 20))));
    let _ = writeln!(out, "### tftp in wait mode\n");
    let _ = writeln!(
        out,
        "A {mib} MiB file fetched with tftp-hpa's `tftp -m binary` (512-byte \
         blocks), each transfer from an idle server: its request is the \
         datagram that makes the server start `in.tftpd` on the service's \
         socket. `in.tftpd` forks a process for the transfer, which has a \
         socket of its own: the daemon is not in the data path. *CPU*: from \
         the request until the server is idle again (the daemon's whole \
         wait-mode cycle; *tree* adds `in.tftpd`). Every file is checked \
         byte for byte.\n"
    );
    let mut t = Table::new(&[
        "server",
        "s per transfer",
        "fastest – slowest",
        "MB/s",
        "own CPU ms",
        "tree CPU ms",
        "checked",
        "from idle",
    ]);
    for server in servers_of(data, &f) {
        let all = [("test", "tftp"), ("server", server)];
        // The figures are the checked transfers'.
        let f = [("test", "tftp"), ("server", server), ("ok", "yes")];
        let secs: Vec<f64> = data
            .matching(&f)
            .filter_map(|r| r.get("secs")?.parse().ok())
            .collect();
        let low = secs.iter().copied().reduce(f64::min);
        let high = secs.iter().copied().reduce(f64::max);
        let count = |key: &str| {
            let yes = data
                .matching(&all)
                .filter(|r| r.get(key).is_some_and(|v| v == "yes"))
                .count();
            format!("{yes} of {}", data.runs(&all))
        };
        t.row(vec![
            server_cell(server),
            num(data.median(&f, "secs")),
            format!("{} – {}", num(low), num(high)),
            num(data.median(&f, "mb_per_s")),
            num(data.median(&f, "own_cpu_ms")),
            num(data.median(&f, "tree_cpu_ms")),
            count("ok"),
            count("fresh"),
        ]);
    }
    t.render(out);
}

#[cfg(test)]
mod tests {
    use super::super::Data;
    use super::*;

    const LINES: &str = "\
test=udp server=wininetd conc=1 run=1 size=64 loss_timeout_ms=10 rate=30000 loss_pct=0.00 late=0 own_cpu_us=5 errors=0
test=udp server=wininetd conc=1 run=2 size=64 loss_timeout_ms=10 rate=10000 loss_pct=0.00 late=0 own_cpu_us=6 errors=0
test=udp server=xinetd conc=1 run=1 size=64 loss_timeout_ms=10 rate=10000 loss_pct=12.5 late=3 own_cpu_us=9 errors=0
test=udp server=xinetd conc=1 run=2 size=64 loss_timeout_ms=10 rate=6000 loss_pct=14.0 late=1 own_cpu_us=9 errors=0
test=udp server=socat conc=1 run=1 size=64 loss_timeout_ms=10 rate=900 loss_pct=0.00 late=0 own_cpu_us=80 errors=0
test=builtin server=xinetd builtin=daytime conc=8 run=1 rate=5000 errors=0
test=skipped server=wininetd figure=tcp-builtins reason=its%20service%20did%20not%20start:%20unknown%20key%20`protocol`%2C%20100%25%zz
test=tftp server=wininetd run=1 bytes=10485760 secs=1.30 mb_per_s=8.07 own_cpu_ms=0.9 ok=yes fresh=yes
test=tftp server=wininetd run=2 bytes=10485760 secs=1.50 mb_per_s=7.00 own_cpu_ms=1.1 ok=yes fresh=yes
test=tftp server=xinetd run=1 bytes=10485760 secs=1.35 mb_per_s=7.77 own_cpu_ms=2.0 ok=yes fresh=yes
test=tftp server=xinetd run=2 bytes=10485760 secs=1.30 mb_per_s=8.07 own_cpu_ms=2.0 ok=yes fresh=no
test=tftp server=xinetd run=3 bytes=0 secs=0.02 mb_per_s=500 own_cpu_ms=0.5 ok=no fresh=yes
";

    #[test]
    fn escapes_are_undone() {
        assert_eq!(unescape("a%20b%25c"), "a b%c");
        assert_eq!(unescape("100%"), "100%");
        assert_eq!(unescape("%zz%2"), "%zz%2");
        assert_eq!(unescape("%C3%A9"), "é");
    }

    #[test]
    fn targets_are_held_against_xinetd_run_by_run() {
        let data = Data::parse(LINES);
        // Run 1: 30000 ≥ 2 × 10000; run 2: 10000 < 2 × 6000. socat is no
        // reference here.
        let f = [("test", "udp"), ("conc", "1")];
        assert_eq!(
            runs_met(&data, &f, "rate", |o, x| o >= 2.0 * x),
            Some((1, 2))
        );
        let report = {
            let mut out = String::new();
            render(&data, &mut out);
            out
        };
        // Medians 20000 and 8000.
        assert!(
            report.contains(
                "| UDP echo built-in, datagrams answered/s, c=1: ≥ 2× xinetd | 20000 | 8000 | 2.50× | yes | 1 of 2 |"
            ),
            "{report}"
        );
        // 1.4 s against 1.325 s (xinetd's median): within 10 % on the medians; run by run,
        // 1.30 against 1.35 is, 1.50 against 1.30 is not.
        assert!(
            report.contains("= xinetd (± 10 %) | 1.40 | 1.33 | 1.06× | yes | 1 of 2 |"),
            "{report}"
        );
        // A skipped figure says so, with its reason, in the list and in
        // its targets; the figures nobody measured have no row.
        assert!(
            report.contains(
                "- **wininetd**, TCP built-ins: skipped, its service did not start: unknown key `protocol`, 100%%zz"
            ),
            "{report}"
        );
        assert!(
            report.contains("| TCP daytime built-in, sessions/s, c=8: ≥ 3× xinetd | skipped | 5000 | – | – | – |"),
            "{report}"
        );
        assert!(
            report.contains("| TCP echo built-in, sessions/s, c=1: ≥ 3× xinetd | skipped | – |"),
            "{report}"
        );
        assert!(!report.contains("c=64: ≥ 2×"), "{report}");
        // The tftp table counts the checked and the fresh transfers; a
        // transfer that failed its check is in neither median nor range.
        assert!(
            report.contains("| xinetd | 1.33 | 1.30 – 1.35 | 7.92 | 2 | – | 2 of 3 | 2 of 3 |"),
            "{report}"
        );
    }
}
