//! The report's section on TLS termination and the PROXY protocol (issue
//! 19): wininetd's `tls` against stunnel4 and socat serving the same
//! programs with the same certificate, and a plain service with
//! `proxy_protocol = "v2"` against the same service without it.
//!
//! The lines carry `test=tls` (the `sessions` generator with
//! `--tls-cert`), `test=tls-bulk` (`bulk --tls-cert`), `test=proxy` (the
//! `sessions` generator, `header=v2` with `--proxy-v2`, `header=none`
//! without), and `test=tls-skipped` for an instance that did not start or
//! serve (`figure=`, `reason=` escaped as `run.sh` writes it).

use std::fmt::Write as _;

use super::kinds::{figure_name, unescape};
use super::{Data, OURS, Table, num, ratio, runs_cell, server_cell};

/// The peer the TLS targets are held against.
const STUNNEL: &str = "stunnel";
const CONCURRENCIES: [&str; 2] = ["1", "8"];
/// The TLS session rate wininetd is to reach, as a multiple of stunnel's.
const SESSIONS_FACTOR: f64 = 1.5;
/// How much of the rate without a header the PROXY header may cost.
const PROXY_TOLERANCE: f64 = 0.05;

/// Whether the lines hold anything for this section.
pub(super) fn present(data: &Data) -> bool {
    ["tls", "tls-bulk", "proxy", "tls-skipped"]
        .iter()
        .any(|t| data.runs(&[("test", t)]) > 0)
}

pub(super) fn render(data: &Data, out: &mut String) {
    out.push_str("## TLS and PROXY protocol\n\n");
    out.push_str(
        "TLS termination (issue 19): wininetd's `tls = { cert, key }` against \
         stunnel4 (`exec =`: the program started for each connection, on a \
         socket pair it relays) and socat (`OPENSSL-LISTEN:…,fork EXEC:`), \
         the same programs, the same certificate (P-256). The client is \
         rustls (ring), TLS 1.3 only, offering X25519 first as OpenSSL, \
         curl and browsers do; every session is a full handshake, with no \
         resumption (*resumed* counts any). The client trusts exactly the \
         one certificate (a pin: the server's must be it, byte for byte, and \
         sign the handshake with its key). Then the PROXY protocol: a plain \
         service with `proxy_protocol = \"v2\"`, each client sending a v2 \
         header first, against the same service without. Every figure is \
         the median of its runs; the servers take turns within each \
         run.\n\n",
    );
    skipped(data, out);
    targets(data, out);
    sessions(data, out);
    bulk(data, out);
    proxy(data, out);
}

fn skipped(data: &Data, out: &mut String) {
    let lines: Vec<String> = data
        .matching(&[("test", "tls-skipped")])
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

fn was_skipped(data: &Data, server: &str, figure: &str) -> bool {
    data.runs(&[
        ("test", "tls-skipped"),
        ("server", server),
        ("figure", figure),
    ]) > 0
}

/// One row of the targets table: ours and the reference are the lines
/// matching `filter` plus `ours` and plus `reference`.
struct Target {
    label: String,
    filter: Vec<(&'static str, &'static str)>,
    ours: (&'static str, &'static str),
    reference: (&'static str, &'static str),
    metric: &'static str,
    /// The figure's name in `test=tls-skipped` lines.
    figure: &'static str,
    met: Box<dyn Fn(f64, f64) -> bool>,
}

impl Target {
    fn median(&self, data: &Data, which: (&str, &str), run: Option<&str>) -> Option<f64> {
        let mut f = self.filter.clone();
        f.push(which);
        if let Some(run) = run {
            f.push(("run", run));
        }
        data.median(&f, self.metric)
    }

    /// In how many runs ours met the target against the reference of the
    /// same run: `(met, runs)`, `None` without a run that has both.
    fn runs_met(&self, data: &Data) -> Option<(usize, usize)> {
        let mut f = self.filter.clone();
        f.push(self.ours);
        let mut runs: Vec<&str> = data
            .matching(&f)
            .filter_map(|r| r.get("run").map(String::as_str))
            .collect();
        runs.sort_unstable();
        runs.dedup();
        let (mut met, mut counted) = (0, 0);
        for run in runs {
            let ours = self.median(data, self.ours, Some(run));
            let theirs = self.median(data, self.reference, Some(run));
            if let (Some(o), Some(t)) = (ours, theirs) {
                counted += 1;
                met += usize::from((self.met)(o, t));
            }
        }
        (counted > 0).then_some((met, counted))
    }
}

fn verdict(ok: Option<bool>) -> String {
    match ok {
        Some(true) => "yes".to_owned(),
        Some(false) => "**no**".to_owned(),
        None => "–".to_owned(),
    }
}

fn targets(data: &Data, out: &mut String) {
    out.push_str(
        "Targets (*runs met*: in how many runs wininetd met it against the \
         reference's figure of the same run):\n\n",
    );
    let mut t = Table::new(&[
        "target",
        "wininetd",
        "reference",
        "ratio",
        "met",
        "runs met",
    ]);
    let mut targets = Vec::new();
    for conc in CONCURRENCIES {
        targets.push(Target {
            label: format!(
                "TLS 1.3 sessions/s, minimal child, c={conc}: ≥ {SESSIONS_FACTOR}× stunnel"
            ),
            filter: vec![("test", "tls"), ("conc", conc)],
            ours: ("server", OURS),
            reference: ("server", STUNNEL),
            metric: "rate",
            figure: "tls",
            met: Box::new(|o, s| o >= SESSIONS_FACTOR * s),
        });
    }
    targets.push(Target {
        label: "TLS MB/s through one echo session: ≥ stunnel".to_owned(),
        filter: vec![("test", "tls-bulk")],
        ours: ("server", OURS),
        reference: ("server", STUNNEL),
        metric: "mb_per_s",
        figure: "tls",
        met: Box::new(|o, s| o >= s),
    });
    for conc in CONCURRENCIES {
        targets.push(Target {
            label: format!(
                "PROXY v2 header, sessions/s, minimal child, c={conc}: within {:.0} % of the same service without (≥ {:.2}×)",
                PROXY_TOLERANCE * 100.0,
                1.0 - PROXY_TOLERANCE
            ),
            filter: vec![("test", "proxy"), ("server", OURS), ("conc", conc)],
            ours: ("header", "v2"),
            reference: ("header", "none"),
            metric: "rate",
            figure: "proxy",
            met: Box::new(|o, n| o >= (1.0 - PROXY_TOLERANCE) * n),
        });
    }
    for target in targets {
        if data.runs(&target.filter) == 0 && !was_skipped(data, OURS, target.figure) {
            continue;
        }
        let ours = target.median(data, target.ours, None);
        let theirs = target.median(data, target.reference, None);
        let cell = |value: Option<f64>, server: &str| {
            if value.is_none() && was_skipped(data, server, target.figure) {
                "skipped".to_owned()
            } else {
                num(value)
            }
        };
        let reference_server = match target.reference {
            ("server", s) => s,
            _ => OURS,
        };
        let reference_name = match target.reference {
            ("server", s) => s.to_owned(),
            _ => "without header".to_owned(),
        };
        t.row(vec![
            target.label.clone(),
            cell(ours, OURS),
            match cell(theirs, reference_server) {
                v if v == "–" || v == "skipped" => v,
                v => format!("{v} ({reference_name})"),
            },
            ratio(ours, theirs),
            verdict(ours.zip(theirs).map(|(o, r)| (target.met)(o, r))),
            runs_cell(target.runs_met(data)),
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

/// The key exchange the client saw (the first line's), and whether the
/// server asked for another key share.
fn key_exchange(data: &Data, filter: &[(&str, &str)]) -> String {
    let kx = data
        .matching(filter)
        .find_map(|r| r.get("kx").cloned())
        .unwrap_or_else(|| "–".to_owned());
    if data.sum(filter, "retried") > 0.0 {
        format!("{kx}, after a HelloRetryRequest")
    } else {
        kx
    }
}

fn sessions(data: &Data, out: &mut String) {
    let f = [("test", "tls")];
    if data.runs(&f) == 0 {
        return;
    }
    out.push_str("### TLS sessions per second\n\n");
    out.push_str(
        "A session: connect, full TLS 1.3 handshake, read the 6-byte reply \
         (the minimal child's), see the server's close_notify, send ours, \
         close. Latency: from just before `connect` to the reply's first \
         byte, the handshake included. CPU per session: *own*, the daemon \
         process's live threads: all of wininetd's work, the handshake \
         included; stunnel's and socat's listener only (stunnel does each \
         connection on a thread that exits with it, socat in a process of \
         its own), so not comparable. *tree*, the server's cgroup: the \
         daemon, its per-connection processes or threads and the programs, \
         exact: the figure to compare. *client*: the generator's own \
         CPU per session (its half of the handshake), for scale. Higher \
         rate, lower latency and CPU are better.\n\n",
    );
    let mut t = Table::new(&[
        "server",
        "c",
        "sessions/s",
        "p50 µs",
        "p99 µs",
        "own CPU µs",
        "tree CPU µs",
        "client CPU µs",
        "failed",
        "resumed",
        "key exchange",
    ]);
    for server in servers_of(data, &f) {
        for conc in CONCURRENCIES {
            let f = [("test", "tls"), ("server", server), ("conc", conc)];
            if data.runs(&f) == 0 {
                continue;
            }
            let resumed = data.sum(&f, "sessions") - data.sum(&f, "full_handshakes");
            t.row(vec![
                server_cell(server),
                conc.to_owned(),
                num(data.median(&f, "rate")),
                num(data.median(&f, "p50_us")),
                num(data.median(&f, "p99_us")),
                num(data.median(&f, "own_cpu_us")),
                num(data.median(&f, "tree_cpu_us")),
                num(data.median(&f, "client_cpu_us")),
                format!("{:.0}", data.sum(&f, "errors")),
                format!("{resumed:.0}"),
                key_exchange(data, &f),
            ]);
        }
    }
    for conc in CONCURRENCIES {
        if data.runs(&[("test", "tls"), ("conc", conc)]) == 0 {
            continue;
        }
        let of = |server: &str, metric: &str| {
            data.median(
                &[("test", "tls"), ("server", server), ("conc", conc)],
                metric,
            )
        };
        // No ratio of *own* CPU: stunnel's misses its connections' threads.
        let mut row = vec!["**wininetd / stunnel**".to_owned(), conc.to_owned()];
        for metric in ["rate", "p50_us", "p99_us", "", "tree_cpu_us"] {
            row.push(if metric.is_empty() {
                String::new()
            } else {
                ratio(of(OURS, metric), of(STUNNEL, metric))
            });
        }
        row.extend([String::new(), String::new(), String::new(), String::new()]);
        t.row(row);
    }
    t.render(out);
}

fn bulk(data: &Data, out: &mut String) {
    let f = [("test", "tls-bulk")];
    if data.runs(&f) == 0 {
        return;
    }
    let mib = data
        .median(&f, "bytes")
        .map_or_else(|| "–".to_owned(), |b| num(Some(b / f64::from(1 << 20))));
    let _ = writeln!(out, "### TLS bulk throughput through one echo session\n");
    let _ = writeln!(
        out,
        "{mib} MiB written over one TLS 1.3 session to the echo child while \
         it comes back, every byte checked (MB = 10⁶ bytes, one direction; \
         the handshake is in the time). Our close_notify goes once every \
         byte came back: stunnel ends a session at the client's \
         close_notify and drops what the program still had to send. Every \
         server relays: wininetd and stunnel decrypt into the program's \
         pipe or socket pair and encrypt what comes out; socat's \
         per-connection process does the same. CPU per GB: *own*, the \
         daemon process (see above: stunnel's relaying thread and socat's \
         relaying process are not in it); *tree*, the server's cgroup \
         (daemon, relaying processes or threads, and the echo program), the \
         figure to compare. Higher MB/s, lower CPU are better.\n"
    );
    let mut t = Table::new(&[
        "server",
        "MB/s",
        "slowest – fastest",
        "own CPU ms/GB",
        "tree CPU ms/GB",
        "cipher",
    ]);
    for server in servers_of(data, &f) {
        let f = [("test", "tls-bulk"), ("server", server)];
        let rates: Vec<f64> = data
            .matching(&f)
            .filter_map(|r| r.get("mb_per_s")?.parse().ok())
            .collect();
        let low = rates.iter().copied().reduce(f64::min);
        let high = rates.iter().copied().reduce(f64::max);
        let cipher = data
            .matching(&f)
            .find_map(|r| r.get("cipher").cloned())
            .unwrap_or_else(|| "–".to_owned());
        t.row(vec![
            server_cell(server),
            num(data.median(&f, "mb_per_s")),
            format!("{} – {}", num(low), num(high)),
            num(data.median(&f, "own_cpu_ms_per_gb")),
            num(data.median(&f, "tree_cpu_ms_per_gb")),
            cipher,
        ]);
    }
    let of = |server: &str, metric: &str| {
        data.median(&[("test", "tls-bulk"), ("server", server)], metric)
    };
    t.row(vec![
        "**wininetd / stunnel**".to_owned(),
        ratio(of(OURS, "mb_per_s"), of(STUNNEL, "mb_per_s")),
        String::new(),
        String::new(),
        ratio(
            of(OURS, "tree_cpu_ms_per_gb"),
            of(STUNNEL, "tree_cpu_ms_per_gb"),
        ),
        String::new(),
    ]);
    t.render(out);
}

fn proxy(data: &Data, out: &mut String) {
    let f = [("test", "proxy")];
    if data.runs(&f) == 0 {
        return;
    }
    out.push_str("### PROXY protocol v2\n\n");
    out.push_str(
        "One wininetd instance, two services running the minimal child in \
         socket mode: one with `proxy_protocol = \"v2\"` and \
         `trusted_proxies = [\"127.0.0.1\"]`, whose clients send a 28-byte \
         v2 header (PROXY, TCP over IPv4, the connection's own addresses) \
         as soon as they are connected, and the same service without, \
         whose clients send nothing. Sessions as in the sessions table; \
         CPU per session as above.\n\n",
    );
    let mut t = Table::new(&[
        "service",
        "c",
        "sessions/s",
        "p50 µs",
        "p99 µs",
        "own CPU µs",
        "tree CPU µs",
        "client CPU µs",
        "failed",
    ]);
    let rows = [("v2", "with a v2 header"), ("none", "without")];
    for conc in CONCURRENCIES {
        if data.runs(&[("test", "proxy"), ("conc", conc)]) == 0 {
            continue;
        }
        for (header, name) in rows {
            let f = [("test", "proxy"), ("header", header), ("conc", conc)];
            if data.runs(&f) == 0 {
                continue;
            }
            t.row(vec![
                name.to_owned(),
                conc.to_owned(),
                num(data.median(&f, "rate")),
                num(data.median(&f, "p50_us")),
                num(data.median(&f, "p99_us")),
                num(data.median(&f, "own_cpu_us")),
                num(data.median(&f, "tree_cpu_us")),
                num(data.median(&f, "client_cpu_us")),
                format!("{:.0}", data.sum(&f, "errors")),
            ]);
        }
        let of = |header: &str, metric: &str| {
            data.median(
                &[("test", "proxy"), ("header", header), ("conc", conc)],
                metric,
            )
        };
        let mut row = vec!["**with / without**".to_owned(), conc.to_owned()];
        for metric in [
            "rate",
            "p50_us",
            "p99_us",
            "own_cpu_us",
            "tree_cpu_us",
            "client_cpu_us",
        ] {
            row.push(ratio(of("v2", metric), of("none", metric)));
        }
        row.push(String::new());
        t.row(row);
    }
    t.render(out);
}

#[cfg(test)]
mod tests {
    use super::super::Data;
    use super::*;

    const LINES: &str = "\
test=tls server=wininetd conc=1 run=1 sessions=300 rate=600 p99_us=900 tree_cpu_us=500 errors=0 kx=X25519 full_handshakes=300 retried=0
test=tls server=wininetd conc=1 run=2 sessions=200 rate=400 p99_us=900 tree_cpu_us=500 errors=0 kx=X25519 full_handshakes=200 retried=0
test=tls server=stunnel conc=1 run=1 sessions=150 rate=300 p99_us=900 tree_cpu_us=900 errors=0 kx=X25519 full_handshakes=150 retried=0
test=tls server=stunnel conc=1 run=2 sessions=150 rate=300 p99_us=900 tree_cpu_us=900 errors=0 kx=X25519 full_handshakes=149 retried=0
test=tls server=socat conc=1 run=1 sessions=100 rate=200 errors=1 kx=secp256r1 full_handshakes=100 retried=100
test=tls-skipped server=socat figure=tls reason=its%20service%20did%20not%20start
test=tls-bulk server=wininetd run=1 bytes=268435456 mb_per_s=400 tree_cpu_ms_per_gb=3000 cipher=TLS13_AES_256_GCM_SHA384
test=tls-bulk server=stunnel run=1 bytes=268435456 mb_per_s=250 tree_cpu_ms_per_gb=5000 cipher=TLS13_AES_256_GCM_SHA384
test=proxy server=wininetd header=v2 conc=8 run=1 rate=960 errors=0
test=proxy server=wininetd header=none conc=8 run=1 rate=1000 errors=0
test=proxy server=wininetd header=v2 conc=8 run=2 rate=900 errors=0
test=proxy server=wininetd header=none conc=8 run=2 rate=1000 errors=0
";

    fn rendered() -> String {
        let mut out = String::new();
        render(&Data::parse(LINES), &mut out);
        out
    }

    #[test]
    fn tls_targets_are_held_against_stunnel_run_by_run() {
        let report = rendered();
        // Medians 500 and 300: 1.67×; run 1 (600 ≥ 450) met, run 2
        // (400 < 450) not. socat is shown, never the reference.
        assert!(
            report.contains(
                "| TLS 1.3 sessions/s, minimal child, c=1: ≥ 1.5× stunnel | 500 | 300 (stunnel) | 1.67× | yes | 1 of 2 |"
            ),
            "{report}"
        );
        assert!(!report.contains("c=8: ≥ 1.5×"), "{report}");
        assert!(
            !report.contains("| **wininetd / stunnel** | 8 |"),
            "{report}"
        );
        assert!(!report.contains("| **with / without** | 1 |"), "{report}");
        assert!(
            report.contains(
                "| TLS MB/s through one echo session: ≥ stunnel | 400 | 250 (stunnel) | 1.60× | yes | 1 of 1 |"
            ),
            "{report}"
        );
        // A resumed session (stunnel, run 2) and socat's retried key
        // exchange are shown.
        assert!(
            report.contains("| stunnel | 1 | 300 | – | 900 | – | 900 | – | 0 | 1 | X25519 |"),
            "{report}"
        );
        assert!(
            report.contains("| 1 | 0 | secp256r1, after a HelloRetryRequest |"),
            "{report}"
        );
        assert!(
            report.contains("- **socat**, TLS: skipped, its service did not start"),
            "{report}"
        );
    }

    #[test]
    fn the_proxy_header_is_held_against_the_same_service_without() {
        let report = rendered();
        // 930 against 1000: 0.93×, not within 5 %; run 1 (960) is, run 2
        // (900) is not.
        assert!(
            report.contains(
                "c=8: within 5 % of the same service without (≥ 0.95×) | 930 | 1000 (without header) | 0.93× | **no** | 1 of 2 |"
            ),
            "{report}"
        );
        assert!(
            report.contains("| **with / without** | 8 | 0.93× |"),
            "{report}"
        );
    }
}
