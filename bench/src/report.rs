//! `RESULTS.md` from the lines `run.sh` collected: every figure is the median
//! of its runs; wininetd's figures are set against the best peer (the best
//! of the other servers, wininetd's own variants excluded) and, for session
//! rates, against the machine's spawn ceiling.
//!
//! The lines carry `test=` (sessions, hold, bulk, ceiling, idle, netcheck),
//! `server=`, and for sessions `child=` and `conc=`; see `run.sh`. The
//! other kinds of services (UDP, built-ins, wait mode) have a section of
//! their own, in `kinds`, and so have TLS and the PROXY protocol, in
//! `tls`. A run of one part of the suite (`run.sh
//! --suite`) gets the sections of that part.

use std::collections::BTreeMap;
use std::error::Error;
use std::fmt::Write as _;
use std::fs;
use std::path::PathBuf;

use crate::line;

mod kinds;
mod tls;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The collected measurement lines.
    #[arg(long)]
    results: PathBuf,
    /// Markdown put first, as it is (machine, versions, how it was run).
    #[arg(long)]
    header: Option<PathBuf>,
    /// Where to write; stdout if absent.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Our server's name in the lines; other names starting with it are its
/// variants (shown, never a peer).
const OURS: &str = "wininetd";
/// Our static (musl) build, measured where the suite could build it.
const STATIC: &str = "wininetd-static";
const CHILDREN: [(&str, &str); 2] = [("min", "minimal child"), ("static", "static C child")];
const CONCURRENCIES: [&str; 3] = ["1", "8", "64"];

pub fn run(args: &Args) -> Result<(), Box<dyn Error>> {
    let text = fs::read_to_string(&args.results)
        .map_err(|e| format!("{}: {e}", args.results.display()))?;
    let data = Data::parse(&text);
    if data.records.is_empty() {
        return Err(format!("{}: no measurement", args.results.display()).into());
    }
    let header = match &args.header {
        Some(path) => fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?,
        None => String::new(),
    };
    let report = format!("{header}{}", render(&data));
    match &args.out {
        Some(path) => fs::write(path, report).map_err(|e| format!("{}: {e}", path.display()))?,
        None => print!("{report}"),
    }
    Ok(())
}

/// The collected lines.
#[derive(Debug, Default)]
struct Data {
    records: Vec<BTreeMap<String, String>>,
    /// Servers in the order they first appear.
    servers: Vec<String>,
}

impl Data {
    fn parse(text: &str) -> Self {
        let mut data = Data::default();
        for line in text.lines() {
            let record: BTreeMap<String, String> = line::parse(line)
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
            if !record.contains_key("test") {
                continue;
            }
            if let Some(server) = record.get("server") {
                if !data.servers.contains(server) {
                    data.servers.push(server.clone());
                }
            }
            data.records.push(record);
        }
        data
    }

    fn matching<'a>(
        &'a self,
        filter: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a BTreeMap<String, String>> + 'a {
        self.records.iter().filter(move |r| {
            filter
                .iter()
                .all(|(k, v)| r.get(*k).is_some_and(|x| x == v))
        })
    }

    /// The median of `metric` over the runs matching `filter`.
    fn median(&self, filter: &[(&str, &str)], metric: &str) -> Option<f64> {
        let values = self
            .matching(filter)
            .filter_map(|r| r.get(metric)?.parse::<f64>().ok())
            .filter(|v| v.is_finite())
            .collect();
        median(values)
    }

    /// The sum of `metric` over the runs matching `filter`.
    fn sum(&self, filter: &[(&str, &str)], metric: &str) -> f64 {
        self.matching(filter)
            .filter_map(|r| r.get(metric)?.parse::<f64>().ok())
            .sum()
    }

    fn runs(&self, filter: &[(&str, &str)]) -> usize {
        self.matching(filter).count()
    }

    fn peers(&self) -> impl Iterator<Item = &str> {
        self.servers
            .iter()
            .map(String::as_str)
            .filter(|s| !s.starts_with(OURS))
    }

    /// In how many runs our figure met `target` against the peers' figure
    /// of the same run, the best one's or their median as `reference` says
    /// (runs are interleaved, so a run's figures were taken under the same
    /// conditions): `(met, runs)`. `None` without a run that has both.
    fn runs_met(
        &self,
        filter: &[(&str, &str)],
        metric: &str,
        reference: Reference,
        target: impl Fn(f64, f64) -> bool,
    ) -> Option<(usize, usize)> {
        let value = |r: &BTreeMap<String, String>| {
            r.get(metric)?.parse::<f64>().ok().filter(|v| v.is_finite())
        };
        let (mut met, mut runs) = (0, 0);
        for ours in self.matching(filter) {
            if ours.get("server").map(String::as_str) != Some(OURS) {
                continue;
            }
            let (Some(run), Some(mine)) = (ours.get("run"), value(ours)) else {
                continue;
            };
            let peers: Vec<f64> = self
                .matching(filter)
                .filter(|r| {
                    r.get("run") == Some(run)
                        && r.get("server").is_some_and(|s| !s.starts_with(OURS))
                })
                .filter_map(value)
                .collect();
            if let Some(theirs) = reference.of(peers) {
                runs += 1;
                met += usize::from(target(mine, theirs));
            }
        }
        (runs > 0).then_some((met, runs))
    }

    /// In how many of our runs matching `filter` `metric` met `target`.
    fn runs_within(
        &self,
        filter: &[(&str, &str)],
        metric: &str,
        target: impl Fn(f64) -> bool,
    ) -> Option<(usize, usize)> {
        let values: Vec<f64> = self
            .matching(filter)
            .filter_map(|r| r.get(metric)?.parse::<f64>().ok())
            .filter(|v| v.is_finite())
            .collect();
        let met = values.iter().filter(|&&v| target(v)).count();
        (!values.is_empty()).then_some((met, values.len()))
    }

    /// Each peer's median of `metric`, with its name, for the peers that
    /// have one.
    fn peer_medians(&self, filter: &[(&str, &str)], metric: &str) -> Vec<(f64, &str)> {
        self.peers()
            .filter_map(|peer| {
                let mut f = filter.to_vec();
                f.push(("server", peer));
                Some((self.median(&f, metric)?, peer))
            })
            .collect()
    }

    /// The best peer's median of `metric` (the highest if `higher`, else the
    /// lowest) and its name.
    fn best_peer(
        &self,
        filter: &[(&str, &str)],
        metric: &str,
        higher: bool,
    ) -> Option<(f64, &str)> {
        self.peer_medians(filter, metric)
            .into_iter()
            .reduce(|a, b| if (b.0 > a.0) == higher { b } else { a })
    }

    /// The median of the peers' medians of `metric`, with the lowest and
    /// the highest of them: the typical peer, for a figure in which the
    /// servers should not differ.
    fn peers_median(&self, filter: &[(&str, &str)], metric: &str) -> Option<Spread> {
        let medians: Vec<f64> = self
            .peer_medians(filter, metric)
            .into_iter()
            .map(|(v, _)| v)
            .collect();
        Some(Spread {
            low: medians.iter().copied().reduce(f64::min)?,
            high: medians.iter().copied().reduce(f64::max)?,
            median: median(medians)?,
        })
    }
}

/// Which of the peers' figures a target is held against.
#[derive(Debug, Clone, Copy)]
enum Reference {
    /// The best: the highest if `higher`, else the lowest.
    Best { higher: bool },
    /// Their median. The best of several peers with the same data path is
    /// the luckiest draw of the run's noise; a server as good as they are
    /// would fall short of it most of the time.
    Median,
}

impl Reference {
    fn of(self, values: Vec<f64>) -> Option<f64> {
        match self {
            Self::Best { higher } => values
                .into_iter()
                .reduce(|a, b| if (b > a) == higher { b } else { a }),
            Self::Median => median(values),
        }
    }
}

/// The peers' medians of one figure: their median, lowest and highest.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Spread {
    median: f64,
    low: f64,
    high: f64,
}

pub fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    })
}

fn num(value: Option<f64>) -> String {
    match value {
        None => "–".to_owned(),
        Some(v) if v.abs() >= 100.0 || v.fract() == 0.0 => format!("{v:.0}"),
        Some(v) if v.abs() >= 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.2}"),
    }
}

fn ratio(ours: Option<f64>, reference: Option<f64>) -> String {
    match (ours, reference) {
        (Some(a), Some(b)) if b != 0.0 => format!("{:.2}×", a / b),
        _ => "–".to_owned(),
    }
}

/// A markdown table.
#[derive(Debug)]
struct Table {
    head: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(head: &[&str]) -> Self {
        Self {
            head: head.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    fn render(&self, out: &mut String) {
        let line = |cells: &[String]| format!("| {} |\n", cells.join(" | "));
        out.push_str(&line(&self.head));
        let rule: Vec<String> = self
            .head
            .iter()
            .enumerate()
            .map(|(i, _)| if i == 0 { "---" } else { "---:" }.to_owned())
            .collect();
        out.push_str(&line(&rule));
        for row in &self.rows {
            out.push_str(&line(row));
        }
        out.push('\n');
    }
}

fn render(data: &Data) -> String {
    let mut out = String::new();
    let main = ["sessions", "hold", "bulk", "idle", "ceiling"]
        .iter()
        .any(|t| data.runs(&[("test", t)]) > 0);
    if main {
        summary(data, &mut out);
        sessions(data, &mut out);
        latency(data, &mut out);
        cpu(data, &mut out);
        hold(data, &mut out);
        bulk(data, &mut out);
        idle(data, &mut out);
        ceiling(data, &mut out);
    }
    if kinds::present(data) {
        kinds::render(data, &mut out);
    }
    if tls::present(data) {
        tls::render(data, &mut out);
    }
    netcheck(data, &mut out);
    out
}

/// The ceiling that bounds a session rate at `conc`: one loop for one
/// session at a time, one loop per core above that.
fn ceiling_for(data: &Data, child: &str, conc: &str) -> Option<f64> {
    let threads = if conc == "1" {
        "1".to_owned()
    } else {
        data.matching(&[("test", "ceiling"), ("child", child)])
            .filter_map(|r| r.get("threads")?.parse::<u32>().ok())
            .max()?
            .to_string()
    };
    data.median(
        &[("test", "ceiling"), ("child", child), ("threads", &threads)],
        "rate",
    )
}

fn summary(data: &Data, out: &mut String) {
    out.push_str("## wininetd against the targets\n\n");
    out.push_str(
        "Medians of the runs below; \"best peer\" is the best of the other \
         servers for that figure (wininetd's own variants excluded). The \
         targets are on the minimal child. Socket-path bulk is held against \
         the peers' median instead: no server but socat is in that data \
         path, so the best of five equal peers is only the luckiest draw of \
         the run's noise.\n\n",
    );
    out.push_str(
        "*Runs met*: in how many runs wininetd's figure met the target \
         against the best peer's figure (socket-path bulk: the peers' \
         median) of the same run (the servers take turns within each run, \
         so a run's figures share its conditions).\n\n",
    );
    let mut t = Table::new(&[
        "target",
        "wininetd",
        "best peer",
        "ratio",
        "met",
        "runs met",
    ]);
    let verdict = |ok: Option<bool>| match ok {
        Some(true) => "yes".to_owned(),
        Some(false) => "**no**".to_owned(),
        None => "–".to_owned(),
    };
    // The targets are set on the minimal child, where the server's own
    // cost shows; the static child's figures are in the sessions table.
    // Each: the metric, what it is, and whether higher is better.
    let session_targets = [
        ("rate", "sessions/s", true),
        ("own_cpu_us", "daemon CPU µs/session", false),
        ("p99_us", "p99 connect→first byte µs", false),
    ];
    for (metric, what, higher) in session_targets {
        for conc in CONCURRENCIES {
            let f = [("test", "sessions"), ("child", "min"), ("conc", conc)];
            let mut ours_f = f.to_vec();
            ours_f.push(("server", OURS));
            let ours = data.median(&ours_f, metric);
            let best = data.best_peer(&f, metric, higher);
            // The target, as a factor of the best peer's figure.
            let (factor, bound) = match (metric, conc) {
                ("rate", "1") => (1.0, "≥ 1× best peer"),
                ("rate", _) => (1.5, "≥ 1.5× best peer"),
                ("own_cpu_us", _) => (0.5, "≤ ½ best peer"),
                _ => (1.0, "≤ best peer"),
            };
            let meets = |o: f64, b: f64| {
                if higher {
                    o >= factor * b
                } else {
                    o <= factor * b
                }
            };
            t.row(vec![
                format!("{what}, minimal child, c={conc}: {bound}"),
                num(ours),
                best_cell(best),
                ratio(ours, best.map(|b| b.0)),
                verdict(ours.zip(best).map(|(o, b)| meets(o, b.0))),
                runs_cell(data.runs_met(&f, metric, Reference::Best { higher }, meets)),
            ]);
        }
    }
    // The default build always has a row; the static one when it ran.
    let idle_best = data.best_peer(&[("test", "idle")], "rss_kib", false);
    for (server, what) in [
        (OURS, String::new()),
        (STATIC, format!(", static build ({STATIC})")),
    ] {
        let ours_f = [("test", "idle"), ("server", server)];
        let idle = data.median(&ours_f, "rss_kib");
        if idle.is_none() && server != OURS {
            continue;
        }
        t.row(vec![
            format!("idle RSS KiB, four services{what}: ≤ 2560"),
            num(idle),
            best_cell(idle_best),
            ratio(idle, idle_best.map(|b| b.0)),
            verdict(idle.map(|v| v <= 2560.0)),
            runs_cell(data.runs_within(&ours_f, "rss_kib", |v| v <= 2560.0)),
        ]);
    }
    let held = data.median(&[("test", "hold"), ("server", OURS)], "rss_per_session_b");
    let held_best = data.best_peer(&[("test", "hold")], "server_per_session_b", false);
    t.row(vec![
        "daemon memory per held session, bytes: ≤ 4096".to_owned(),
        num(held),
        best_cell(held_best),
        ratio(held, held_best.map(|b| b.0)),
        verdict(held.map(|v| v <= 4096.0)),
        runs_cell(data.runs_within(
            &[("test", "hold"), ("server", OURS)],
            "rss_per_session_b",
            |v| v <= 4096.0,
        )),
    ]);
    let socket = [("test", "bulk"), ("path", "socket")];
    let bulk = data.median(
        &[("test", "bulk"), ("server", OURS), ("path", "socket")],
        "mb_per_s",
    );
    // Every server but socat hands the program the socket and stays out of
    // the data path, so the peers differ here only by the run's noise: the
    // target is the typical peer's figure, not the luckiest one's.
    let peers = data.peers_median(&socket, "mb_per_s");
    let within = |o: f64, p: f64| o >= 0.95 * p;
    t.row(vec![
        "socket-mode MB/s, one echo session: = the peers' median (−5 %)".to_owned(),
        num(bulk),
        peers.map_or_else(
            || "–".to_owned(),
            |p| {
                format!(
                    "{} (median; peers {}–{})",
                    num(Some(p.median)),
                    num(Some(p.low)),
                    num(Some(p.high))
                )
            },
        ),
        ratio(bulk, peers.map(|p| p.median)),
        verdict(bulk.zip(peers).map(|(o, p)| within(o, p.median))),
        runs_cell(data.runs_met(&socket, "mb_per_s", Reference::Median, within)),
    ]);
    let relay = [("test", "bulk"), ("path", "relay")];
    let ours = data.median(
        &[("test", "bulk"), ("server", OURS), ("path", "relay")],
        "mb_per_s",
    );
    let relay_best = data.best_peer(&relay, "mb_per_s", true);
    t.row(vec![
        "relay MB/s (`stdio = \"pipe\"`): ≥ 1000".to_owned(),
        num(ours),
        best_cell(relay_best),
        ratio(ours, relay_best.map(|b| b.0)),
        verdict(ours.map(|v| v >= 1000.0)),
        runs_cell(data.runs_within(
            &[("test", "bulk"), ("server", OURS), ("path", "relay")],
            "mb_per_s",
            |v| v >= 1000.0,
        )),
    ]);
    t.render(out);
}

/// "3 of 5", or "–" without runs.
fn runs_cell(runs: Option<(usize, usize)>) -> String {
    runs.map_or_else(|| "–".to_owned(), |(met, runs)| format!("{met} of {runs}"))
}

fn best_cell(best: Option<(f64, &str)>) -> String {
    match best {
        Some((v, name)) => format!("{} ({name})", num(Some(v))),
        None => "–".to_owned(),
    }
}

fn sessions(data: &Data, out: &mut String) {
    out.push_str("## Sessions per second\n\n");
    out.push_str(
        "A session: connect, read the 6-byte reply, see EOF, close. Higher is \
         better. A figure marked * had failed sessions (count in the last \
         column).\n\n",
    );
    let mut head = vec!["server".to_owned()];
    for (child, _) in CHILDREN {
        for conc in CONCURRENCIES {
            head.push(format!("{child} c={conc}"));
        }
    }
    head.push("failed".to_owned());
    let head_refs: Vec<&str> = head.iter().map(String::as_str).collect();
    let mut t = Table::new(&head_refs);
    let columns: Vec<(&str, &str)> = CHILDREN
        .iter()
        .flat_map(|(child, _)| CONCURRENCIES.iter().map(move |c| (*child, *c)))
        .collect();
    for server in &data.servers {
        let mut row = vec![server_cell(server)];
        let mut failed = 0.0;
        for (child, conc) in &columns {
            let f = [
                ("test", "sessions"),
                ("server", server.as_str()),
                ("child", child),
                ("conc", conc),
            ];
            let errors = data.sum(&f, "errors");
            failed += errors;
            let mark = if errors > 0.0 { "*" } else { "" };
            row.push(format!("{}{mark}", num(data.median(&f, "rate"))));
        }
        row.push(format!("{failed:.0}"));
        if data.runs(&[("test", "sessions"), ("server", server)]) > 0 {
            t.row(row);
        }
    }
    let mut best = vec!["best peer".to_owned()];
    let mut vs_best = vec!["**wininetd / best peer**".to_owned()];
    let mut ceiling = vec!["spawn ceiling (1 loop at c=1, 1 per core above)".to_owned()];
    let mut vs_ceiling = vec!["**wininetd / ceiling**".to_owned()];
    for (child, conc) in &columns {
        let f = [("test", "sessions"), ("child", child), ("conc", conc)];
        let b = data.best_peer(&f, "rate", true);
        let ours = data.median(
            &[
                ("test", "sessions"),
                ("server", OURS),
                ("child", child),
                ("conc", conc),
            ],
            "rate",
        );
        let c = ceiling_for(data, child, conc);
        best.push(best_cell(b));
        vs_best.push(ratio(ours, b.map(|b| b.0)));
        ceiling.push(num(c));
        vs_ceiling.push(ratio(ours, c));
    }
    for row in [best, vs_best, ceiling, vs_ceiling] {
        let mut row = row;
        row.push(String::new());
        t.row(row);
    }
    t.render(out);
}

fn server_cell(server: &str) -> String {
    if server == OURS {
        format!("**{server}**")
    } else {
        server.to_owned()
    }
}

fn latency(data: &Data, out: &mut String) {
    out.push_str("## Latency, connect → first byte (µs)\n\n");
    out.push_str(
        "From just before `connect` to the first byte of the reply, as the \
         client sees it (its own scheduling included). Lower is better.\n\n",
    );
    for (child, child_name) in CHILDREN {
        let _ = writeln!(out, "{child_name}:\n");
        let mut head = vec!["server".to_owned()];
        for conc in CONCURRENCIES {
            head.push(format!("c={conc} p50"));
            head.push(format!("c={conc} p99"));
        }
        let head_refs: Vec<&str> = head.iter().map(String::as_str).collect();
        let mut t = Table::new(&head_refs);
        let columns: Vec<(&str, &str)> = CONCURRENCIES
            .iter()
            .flat_map(|c| [(*c, "p50_us"), (*c, "p99_us")])
            .collect();
        for server in &data.servers {
            if data.runs(&[("test", "sessions"), ("server", server)]) == 0 {
                continue;
            }
            let mut row = vec![server_cell(server)];
            for (conc, metric) in &columns {
                let f = [
                    ("test", "sessions"),
                    ("server", server.as_str()),
                    ("child", child),
                    ("conc", conc),
                ];
                row.push(num(data.median(&f, metric)));
            }
            t.row(row);
        }
        let mut vs_best = vec!["**wininetd / best peer**".to_owned()];
        for (conc, metric) in &columns {
            let f = [("test", "sessions"), ("child", child), ("conc", conc)];
            let b = data.best_peer(&f, metric, false);
            let mut ours_f = f.to_vec();
            ours_f.push(("server", OURS));
            vs_best.push(ratio(data.median(&ours_f, metric), b.map(|b| b.0)));
        }
        t.row(vs_best);
        t.render(out);
    }
}

fn cpu(data: &Data, out: &mut String) {
    out.push_str("## CPU time per session (µs)\n\n");
    out.push_str(
        "*own*: the daemon process's own threads \
         (`/proc/PID/task/*/schedstat`): accepting and spawning. *tree*: the \
         server's whole process tree, from the cgroup it was started in (see \
         *CPU accounting* above; without a cgroup, own + `cutime`, which \
         misses much of short-lived children's time): the served program, \
         and for a forking server its per-connection copy (socat's relaying \
         child runs there). The program is the same for every server, so \
         differences in *tree* are the servers'. Lower is better. *client*: \
         the load generator's own cost per session, for scale.\n\n",
    );
    for (child, child_name) in CHILDREN {
        let _ = writeln!(out, "{child_name}:\n");
        let mut head = vec!["server".to_owned()];
        for conc in CONCURRENCIES {
            head.push(format!("own c={conc}"));
        }
        for conc in CONCURRENCIES {
            head.push(format!("tree c={conc}"));
        }
        head.push("client c=8".to_owned());
        let head_refs: Vec<&str> = head.iter().map(String::as_str).collect();
        let mut t = Table::new(&head_refs);
        let columns: Vec<(&str, &str)> = ["own_cpu_us", "tree_cpu_us"]
            .iter()
            .flat_map(|m| CONCURRENCIES.iter().map(move |c| (*c, *m)))
            .chain([("8", "client_cpu_us")])
            .collect();
        for server in &data.servers {
            if data.runs(&[("test", "sessions"), ("server", server)]) == 0 {
                continue;
            }
            let mut row = vec![server_cell(server)];
            for (conc, metric) in &columns {
                let f = [
                    ("test", "sessions"),
                    ("server", server.as_str()),
                    ("child", child),
                    ("conc", conc),
                ];
                row.push(num(data.median(&f, metric)));
            }
            t.row(row);
        }
        let mut vs_best = vec!["**wininetd / best peer**".to_owned()];
        for (conc, metric) in &columns {
            let f = [("test", "sessions"), ("child", child), ("conc", conc)];
            let b = data.best_peer(&f, metric, false);
            let mut ours_f = f.to_vec();
            ours_f.push(("server", OURS));
            vs_best.push(ratio(data.median(&ours_f, metric), b.map(|b| b.0)));
        }
        t.row(vs_best);
        t.render(out);
    }
}

fn hold(data: &Data, out: &mut String) {
    let count = data
        .matching(&[("test", "hold")])
        .find_map(|r| r.get("count").cloned())
        .unwrap_or_else(|| "–".to_owned());
    let hold = data
        .matching(&[("test", "hold")])
        .find_map(|r| r.get("hold_secs").cloned())
        .unwrap_or_else(|| "–".to_owned());
    let _ = writeln!(out, "## {count} long-lived echo sessions, held {hold} s\n");
    out.push_str(
        "Each run on a fresh instance of the server, serving the echo \
         program alone. Opened 32 at a time and verified (a line echoed), \
         held, verified again, closed (our side shut down, the server's EOF \
         seen). *daemon RSS*: the daemon process alone, before its first \
         session and while all are held; its growth counts what the first \
         sessions allocate for good, so it is an upper bound. *server PSS per session*: the growth of the daemon's \
         and its per-connection processes' proportional set size (served \
         programs excluded), per session. Lower is better.\n\n",
    );
    let mut t = Table::new(&[
        "server",
        "successes",
        "daemon RSS before (KiB)",
        "during (KiB)",
        "daemon B/session",
        "server PSS B/session",
        "server processes",
        "open time (s)",
    ]);
    for server in &data.servers {
        let f = [("test", "hold"), ("server", server.as_str())];
        if data.runs(&f) == 0 {
            continue;
        }
        t.row(vec![
            server_cell(server),
            format!("{}/{count}", num(data.median(&f, "successes"))),
            num(data.median(&f, "rss_before_kib")),
            num(data.median(&f, "rss_during_kib")),
            num(data.median(&f, "rss_per_session_b")),
            num(data.median(&f, "server_per_session_b")),
            num(data.median(&f, "server_processes")),
            num(data.median(&f, "open_secs")),
        ]);
    }
    let mut vs_best = vec!["**wininetd / best peer**".to_owned(), String::new()];
    for metric in [
        "rss_before_kib",
        "rss_during_kib",
        "rss_per_session_b",
        "server_per_session_b",
    ] {
        let b = data.best_peer(&[("test", "hold")], metric, false);
        vs_best.push(ratio(
            data.median(&[("test", "hold"), ("server", OURS)], metric),
            b.map(|b| b.0),
        ));
    }
    vs_best.extend([String::new(), String::new()]);
    t.row(vs_best);
    t.render(out);
}

fn bulk(data: &Data, out: &mut String) {
    out.push_str("## Bulk throughput through one echo session\n\n");
    out.push_str(
        "Bytes written while the echo comes back on the same connection \
         (MB = 10⁶ bytes, one direction). *socket*: the program has the \
         connection itself; *relay*: the server copies between the \
         connection and the program (wininetd's `stdio = \"pipe\"`; socat's \
         `EXEC`: a socket pair). CPU per \
         GB as in the CPU table. Higher MB/s is better.\n\n",
    );
    let mut t = Table::new(&["server", "path", "MB/s", "own CPU ms/GB", "tree CPU ms/GB"]);
    for server in &data.servers {
        for path in ["socket", "relay"] {
            let f = [
                ("test", "bulk"),
                ("server", server.as_str()),
                ("path", path),
            ];
            if data.runs(&f) == 0 {
                continue;
            }
            t.row(vec![
                server_cell(server),
                path.to_owned(),
                num(data.median(&f, "mb_per_s")),
                num(data.median(&f, "own_cpu_ms_per_gb")),
                num(data.median(&f, "tree_cpu_ms_per_gb")),
            ]);
        }
    }
    let socket = [("test", "bulk"), ("path", "socket")];
    let ours = |path| {
        data.median(
            &[("test", "bulk"), ("server", OURS), ("path", path)],
            "mb_per_s",
        )
    };
    for path in ["socket", "relay"] {
        let b = data.best_peer(&[("test", "bulk"), ("path", path)], "mb_per_s", true);
        t.row(vec![
            format!("**wininetd / best {path}-path peer**"),
            String::new(),
            ratio(ours(path), b.map(|b| b.0)),
            String::new(),
            String::new(),
        ]);
    }
    t.row(vec![
        "**wininetd / socket-path peers' median**".to_owned(),
        String::new(),
        ratio(
            ours("socket"),
            data.peers_median(&socket, "mb_per_s").map(|p| p.median),
        ),
        String::new(),
        String::new(),
    ]);
    t.render(out);
    out.push_str(
        "wininetd's relay path is `stdio = \"pipe\"`: the program gets pipes, \
         and the daemon moves the bytes between them and the connection with \
         splice(2), without copying them into its own memory. socat relays \
         through a socket pair with read and write.\n\n",
    );
}

fn idle(data: &Data, out: &mut String) {
    out.push_str("## Idle memory, four services\n\n");
    out.push_str(
        "Each server started fresh with four services (minimal, static, echo, \
         and static again on a fourth port), nothing served yet; servers that \
         are one process per port count all four.\n\n",
    );
    let mut t = Table::new(&["server", "processes", "RSS (KiB)", "PSS (KiB)"]);
    for server in &data.servers {
        let f = [("test", "idle"), ("server", server.as_str())];
        if data.runs(&f) == 0 {
            continue;
        }
        t.row(vec![
            server_cell(server),
            num(data.median(&f, "processes")),
            num(data.median(&f, "rss_kib")),
            num(data.median(&f, "pss_kib")),
        ]);
    }
    let mut vs_best = vec!["**wininetd / best peer**".to_owned(), String::new()];
    for metric in ["rss_kib", "pss_kib"] {
        let b = data.best_peer(&[("test", "idle")], metric, false);
        vs_best.push(ratio(
            data.median(&[("test", "idle"), ("server", OURS)], metric),
            b.map(|b| b.0),
        ));
    }
    t.row(vs_best);
    t.render(out);
}

fn ceiling(data: &Data, out: &mut String) {
    out.push_str("## The machine's spawn ceiling\n\n");
    out.push_str(
        "socketpair + spawn (`posix_spawn`) + read to EOF + wait, in a loop, \
         no network: spawns per second.\n\n",
    );
    let mut threads: Vec<u32> = data
        .matching(&[("test", "ceiling")])
        .filter_map(|r| r.get("threads")?.parse().ok())
        .collect();
    threads.sort_unstable();
    threads.dedup();
    let head: Vec<String> = std::iter::once("child".to_owned())
        .chain(threads.iter().map(|t| match t {
            1 => "1 loop".to_owned(),
            n => format!("{n} loops"),
        }))
        .collect();
    let head_refs: Vec<&str> = head.iter().map(String::as_str).collect();
    let mut t = Table::new(&head_refs);
    for (child, child_name) in CHILDREN {
        let mut row = vec![child_name.to_owned()];
        for n in &threads {
            let n = n.to_string();
            row.push(num(data.median(
                &[("test", "ceiling"), ("child", child), ("threads", &n)],
                "rate",
            )));
        }
        t.row(row);
    }
    t.render(out);
}

fn netcheck(data: &Data, out: &mut String) {
    let checks: Vec<_> = data.matching(&[("test", "netcheck")]).collect();
    if checks.is_empty() {
        return;
    }
    out.push_str("## Network check\n\n");
    out.push_str(
        "Each server ran a few sessions of each service under `strace -f -e \
         trace=network` (the other kinds of services: a few datagrams, \
         sessions and a small tftp transfer; TLS: a few sessions and a small \
         transfer); every address in its network calls is listed. *netlink*: \
         the calls on a netlink socket, in which the kernel lists the \
         machine's own interface addresses to a process that asks \
         (getaddrinfo's `AI_ADDRCONFIG`): those addresses are not \
         connections, and not listed.\n\n",
    );
    let mut t = Table::new(&["server", "network calls", "netlink", "addresses", "verdict"]);
    for r in checks {
        let get = |k: &str| r.get(k).cloned().unwrap_or_else(|| "–".to_owned());
        let server = match r.get("figure") {
            Some(figure) => format!("{} ({})", get("server"), kinds::figure_name(figure)),
            None => get("server"),
        };
        t.row(vec![
            server,
            get("calls"),
            get("netlink"),
            get("addresses").replace(',', ", "),
            get("verdict"),
        ]);
    }
    t.render(out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(vec![]), None);
    }

    const LINES: &str = "\
test=sessions server=wininetd child=min conc=8 run=1 rate=300 p99_us=50 own_cpu_us=10 errors=0
test=sessions server=wininetd child=min conc=8 run=2 rate=100 p99_us=70 own_cpu_us=12 errors=0
test=sessions server=wininetd child=min conc=8 run=3 rate=200 p99_us=60 own_cpu_us=11 errors=0
test=sessions server=xinetd child=min conc=8 run=1 rate=100 p99_us=80 own_cpu_us=30 errors=2
test=sessions server=socat child=min conc=8 run=1 rate=120 p99_us=90 own_cpu_us=25 errors=0
test=sessions server=wininetd+log child=min conc=8 run=1 rate=999 p99_us=1 own_cpu_us=1 errors=0
test=idle server=wininetd run=1 processes=1 rss_kib=2900 pss_kib=1500
test=idle server=wininetd-static run=1 processes=1 rss_kib=1400 pss_kib=1300
test=idle server=xinetd run=1 processes=1 rss_kib=3000 pss_kib=1500
test=ceiling child=min threads=1 run=1 rate=500
test=ceiling child=min threads=2 run=1 rate=800
not a measurement
";

    #[test]
    fn best_peer_excludes_our_variants() {
        let data = Data::parse(LINES);
        assert_eq!(data.records.len(), 11);
        assert_eq!(
            data.servers,
            [
                "wininetd",
                "xinetd",
                "socat",
                "wininetd+log",
                "wininetd-static"
            ]
        );
        assert_eq!(
            data.best_peer(&[("test", "idle")], "rss_kib", false),
            Some((3000.0, "xinetd"))
        );
        let f = [("test", "sessions"), ("child", "min"), ("conc", "8")];
        assert_eq!(data.best_peer(&f, "rate", true), Some((120.0, "socat")));
        assert_eq!(
            data.best_peer(&f, "own_cpu_us", false),
            Some((25.0, "socat"))
        );
        assert_eq!(
            data.median(&[("server", "wininetd"), ("conc", "8")], "rate"),
            Some(200.0)
        );
        assert_eq!(ceiling_for(&data, "min", "8"), Some(800.0));
        assert_eq!(ceiling_for(&data, "min", "1"), Some(500.0));
    }

    #[test]
    fn runs_met_compares_each_run_with_that_runs_best_peer() {
        let data = Data::parse(
            "\
test=sessions server=wininetd child=min conc=8 run=1 rate=300
test=sessions server=wininetd child=min conc=8 run=2 rate=100
test=sessions server=wininetd child=min conc=8 run=3 rate=200
test=sessions server=xinetd child=min conc=8 run=1 rate=100
test=sessions server=socat child=min conc=8 run=1 rate=120
test=sessions server=socat child=min conc=8 run=2 rate=90
test=sessions server=wininetd-static child=min conc=8 run=2 rate=10
",
        );
        let f = [("test", "sessions"), ("child", "min"), ("conc", "8")];
        let at_least_1_5 = |o: f64, b: f64| o >= 1.5 * b;
        // Run 1: 300 against socat's 120, met; run 2: 100 against 90, not
        // met (our static build is no peer); run 3 has no peer.
        assert_eq!(
            data.runs_met(&f, "rate", Reference::Best { higher: true }, at_least_1_5),
            Some((1, 2))
        );
        let none = [("test", "sessions"), ("conc", "64")];
        assert_eq!(
            data.runs_met(
                &none,
                "rate",
                Reference::Best { higher: true },
                at_least_1_5
            ),
            None
        );
        let ours = [("test", "sessions"), ("server", "wininetd")];
        assert_eq!(
            data.runs_within(&ours, "rate", |v| v >= 200.0),
            Some((2, 3))
        );
    }

    #[test]
    fn socket_bulk_is_held_against_the_peers_median() {
        let data = Data::parse(
            "\
test=bulk server=wininetd path=socket run=1 mb_per_s=920
test=bulk server=wininetd path=socket run=2 mb_per_s=1000
test=bulk server=wininetd-static path=socket run=1 mb_per_s=5000
test=bulk server=xinetd path=socket run=1 mb_per_s=800
test=bulk server=xinetd path=socket run=2 mb_per_s=1000
test=bulk server=tcpserver path=socket run=1 mb_per_s=1100
test=bulk server=tcpserver path=socket run=2 mb_per_s=1200
test=bulk server=tcpsvd path=socket run=1 mb_per_s=950
test=bulk server=tcpsvd path=socket run=2 mb_per_s=1050
test=bulk server=socat path=relay run=1 mb_per_s=9000
",
        );
        let socket = [("test", "bulk"), ("path", "socket")];
        // Medians: xinetd 900, tcpsvd 1000, tcpserver 1150; our static
        // build and socat's relay are not socket-path peers.
        assert_eq!(
            data.peers_median(&socket, "mb_per_s"),
            Some(Spread {
                median: 1000.0,
                low: 900.0,
                high: 1150.0
            })
        );
        let within = |o: f64, p: f64| o >= 0.95 * p;
        // Run 1: 920 against 950, met; run 2: 1000 against 1050, met.
        assert_eq!(
            data.runs_met(&socket, "mb_per_s", Reference::Median, within),
            Some((2, 2))
        );
        // Against the best peer of each run (1100, 1200), neither is.
        assert_eq!(
            data.runs_met(
                &socket,
                "mb_per_s",
                Reference::Best { higher: true },
                within
            ),
            Some((0, 2))
        );
        let report = render(&data);
        assert!(
            report.contains(
                "= the peers' median (−5 %) | 960 | 1000 (median; peers 900–1150) | 0.96× | yes | 2 of 2 |"
            ),
            "{report}"
        );
        assert!(
            report.contains("| **wininetd / socket-path peers' median** |  | 0.96× |"),
            "{report}"
        );
    }

    #[test]
    fn renders_ratios_and_failures() {
        let report = render(&Data::parse(LINES));
        // 200 / 120 and 200 / 800.
        assert!(report.contains("1.67×"), "{report}");
        assert!(report.contains("0.25×"), "{report}");
        // xinetd's failed sessions are flagged.
        assert!(report.contains("| xinetd | – | 100* |"), "{report}");
        // Both builds' idle memory is held against the target.
        assert!(
            report.contains(
                "| idle RSS KiB, four services: ≤ 2560 | 2900 | 3000 (xinetd) | 0.97× | **no** |"
            ),
            "{report}"
        );
        assert!(
            report.contains(
                "static build (wininetd-static): ≤ 2560 | 1400 | 3000 (xinetd) | 0.47× | yes |"
            ),
            "{report}"
        );
    }
}
