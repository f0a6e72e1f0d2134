//! `hot-text`: writes the linker script that puts the functions the daemon
//! runs (at start, idle and serving sessions) side by side at the head of
//! its text, so that the kernel maps fewer pages of the binary (see
//! `link/hot-text.ld` and `bench/hot-text.sh`, which records the inputs).
//!
//! The inputs name the functions that ran: callgrind's output (run with
//! `--demangle=no`) and `perf script --no-demangle -F comm,ip,sym,dso`
//! lines of samples in the binary. The names the binary defines (`nm`) are
//! kept, each widened to every symbol at the same address (functions merged by
//! the compiler share one body under several names, and only the body has
//! a section of its own), then the hashes that change from build to build
//! are replaced with `*`, so that the script keeps matching after a
//! dependency or the compiler changes.
//!
//! `hot-text-check` tells how stale a script is for a binary linked with it
//! (`WININETD_HOT_TEXT=1`, build.rs): the share of its patterns that match
//! no function of the binary any more (renamed, removed or inlined since
//! the profiles), and the size of `.text.hot`. It cannot see new code that
//! runs and is missing from the script; only a new profile shows that.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::error::Error;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The wininetd binary the profiles were taken of.
    #[arg(long)]
    binary: PathBuf,
    /// callgrind output files (valgrind --tool=callgrind --demangle=no).
    #[arg(long)]
    callgrind: Vec<PathBuf>,
    /// `perf script --no-demangle -F comm,ip,sym,dso` output files.
    #[arg(long)]
    perf: Vec<PathBuf>,
    /// Keep the patterns of this script too (one written by an earlier
    /// pass).
    #[arg(long)]
    merge: Option<PathBuf>,
    /// The linker script to write.
    #[arg(long)]
    out: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// A release build of wininetd linked with the script.
    #[arg(long)]
    binary: PathBuf,
    /// The linker script (link/hot-text.ld).
    #[arg(long)]
    script: PathBuf,
    /// Fail (exit 1) when more than this percentage of the patterns match
    /// no function of the binary.
    #[arg(long, default_value_t = 10.0)]
    max_stale: f64,
}

/// Reports how many of the script's patterns match no function of the
/// binary; an error when their share is above `--max-stale`, or when the
/// binary has no `.text.hot` (it was not linked with the script).
pub fn check(args: &CheckArgs) -> Result<(), Box<dyn Error>> {
    let patterns = script_patterns(&read(&args.script)?);
    if patterns.is_empty() {
        return Err(format!("{}: no patterns", args.script.display()).into());
    }
    let symbols = Symbols::of(&args.binary)?;
    let mut names: Vec<&str> = symbols.by_name.keys().map(String::as_str).collect();
    names.sort_unstable();
    let stale: Vec<&String> = patterns
        .iter()
        .filter(|pattern| !matches_any(pattern, &names))
        .collect();
    let hot = hot_section_size(&args.binary)?
        .ok_or_else(|| format!("{}: no .text.hot section", args.binary.display()))?;
    let share = 100.0 * stale.len() as f64 / patterns.len() as f64;
    println!(
        "hot-text: {} of {} patterns ({share:.1} %) match no function of {}; .text.hot holds {} KiB",
        stale.len(),
        patterns.len(),
        args.binary.display(),
        hot / 1024
    );
    for pattern in stale.iter().take(10) {
        println!("  no match: {pattern}");
    }
    if share > args.max_stale {
        return Err(format!(
            "{share:.1} % of link/hot-text.ld matches nothing (more than {} %): \
             the script is stale, run bench/hot-text.sh",
            args.max_stale
        )
        .into());
    }
    Ok(())
}

/// Whether a linker-script pattern (`*` any run of characters, `?` any
/// one) matches one of `names` (sorted): only the names that start with
/// the pattern's literal head are tried.
fn matches_any(pattern: &str, names: &[&str]) -> bool {
    let head = &pattern[..pattern.find(['*', '?']).unwrap_or(pattern.len())];
    let from = names.partition_point(|name| *name < head);
    names[from..]
        .iter()
        .take_while(|name| name.starts_with(head))
        .any(|name| glob(pattern.as_bytes(), name.as_bytes()))
}

/// `*` and `?` wildcard matching, as ld matches section names.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    // The classic two-pointer match: on a mismatch, retry from the last
    // `*` with one more character swallowed.
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((at, from)) => {
                    p = at + 1;
                    t = from + 1;
                    star = Some((at, from + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// The size of the binary's `.text.hot` section, from `readelf`.
fn hot_section_size(binary: &Path) -> Result<Option<u64>, Box<dyn Error>> {
    let output = Command::new("readelf")
        .args(["--section-headers", "--wide"])
        .arg(binary)
        .output()
        .map_err(|e| format!("readelf: {e}"))?;
    if !output.status.success() {
        return Err(format!("readelf {}: {}", binary.display(), output.status).into());
    }
    // [Nr] Name Type Address Off Size ...
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_once(']'))
        .map(|(_, rest)| rest.split_whitespace().collect::<Vec<_>>())
        .find(|fields| fields.first() == Some(&".text.hot"))
        .and_then(|fields| u64::from_str_radix(fields.get(4)?, 16).ok()))
}

pub fn run(args: &Args) -> Result<(), Box<dyn Error>> {
    let binary =
        fs::canonicalize(&args.binary).map_err(|e| format!("{}: {e}", args.binary.display()))?;
    let mut ran = HashSet::new();
    for path in &args.callgrind {
        ran.extend(callgrind_functions(&read(path)?));
    }
    for path in &args.perf {
        ran.extend(perf_functions(&read(path)?, &binary));
    }
    let symbols = Symbols::of(&binary)?;
    let functions = symbols.widen(&ran);
    if functions.is_empty() {
        return Err("the profiles name no function of the binary".into());
    }
    // An earlier script's patterns go through `pattern` again, which
    // leaves its own output as it is and widens what an older version of
    // it kept whole.
    let mut patterns: BTreeSet<String> = match &args.merge {
        Some(path) => script_patterns(&read(path)?)
            .iter()
            .map(|p| pattern(p))
            .collect(),
        None => BTreeSet::new(),
    };
    patterns.extend(functions.iter().map(|name| pattern(name)));
    fs::write(&args.out, script(&patterns)).map_err(|e| format!("{}: {e}", args.out.display()))?;
    eprintln!(
        "{} functions ran ({} KiB); {} patterns written to {}",
        functions.len(),
        symbols.bytes(&functions) / 1024,
        patterns.len(),
        args.out.display()
    );
    Ok(())
}

fn read(path: &Path) -> Result<String, Box<dyn Error>> {
    fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()).into())
}

/// The functions named in a callgrind output: those that ran and those
/// called, in every object; [`Symbols::widen`] keeps the binary's. (The
/// object callgrind gives a function is not relied on: it names the
/// binary's code outside `.text` "???".) Names are compressed: `fn=(3)
/// name` defines id 3 the first time, `fn=(3)` refers to it later.
fn callgrind_functions(text: &str) -> HashSet<String> {
    text.lines()
        .filter_map(|line| {
            let value = line
                .strip_prefix("fn=(")
                .or_else(|| line.strip_prefix("cfn=("))?;
            Some(value.split_once(") ")?.1.to_owned())
        })
        .collect()
}

/// The symbols of `binary` that samples fell in; perf prints each sample as
/// `comm ip symbol (dso)`.
fn perf_functions(text: &str, binary: &Path) -> HashSet<String> {
    let dso = format!("({})", binary.display());
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace().rev();
            (fields.next()? == dso).then(|| fields.next())?
        })
        .filter(|symbol| *symbol != "[unknown]")
        .map(str::to_owned)
        .collect()
}

/// The binary's function symbols, by address and by name (from `nm`).
#[derive(Debug)]
struct Symbols {
    by_address: HashMap<u64, Vec<String>>,
    by_name: HashMap<String, (u64, u64)>,
}

impl Symbols {
    fn of(binary: &Path) -> Result<Symbols, Box<dyn Error>> {
        let output = Command::new("nm")
            .args(["--defined-only", "--print-size"])
            .arg(binary)
            .output()
            .map_err(|e| format!("nm: {e}"))?;
        if !output.status.success() {
            return Err(format!("nm {}: {}", binary.display(), output.status).into());
        }
        let mut symbols = Symbols {
            by_address: HashMap::new(),
            by_name: HashMap::new(),
        };
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [address, size, kind, name] = fields[..] else {
                continue;
            };
            if !matches!(kind, "t" | "T" | "w" | "W") {
                continue;
            }
            let (Ok(address), Ok(size)) = (
                u64::from_str_radix(address, 16),
                u64::from_str_radix(size, 16),
            ) else {
                continue;
            };
            symbols
                .by_address
                .entry(address)
                .or_default()
                .push(name.to_owned());
            symbols.by_name.insert(name.to_owned(), (address, size));
        }
        Ok(symbols)
    }

    /// The binary's functions among `names`, with every other name of the
    /// same functions.
    fn widen(&self, names: &HashSet<String>) -> BTreeSet<&str> {
        let mut all = BTreeSet::new();
        for name in names {
            if let Some((address, _)) = self.by_name.get(name) {
                all.extend(self.by_address[address].iter().map(String::as_str));
            }
        }
        all
    }

    /// The bytes of code of `names`, each body counted once.
    fn bytes(&self, names: &BTreeSet<&str>) -> u64 {
        let bodies: HashMap<u64, u64> = names
            .iter()
            .filter_map(|name| self.by_name.get(*name).copied())
            .collect();
        bodies.values().sum()
    }
}

/// A symbol name with the parts that change between builds as `*`: the
/// hash of a legacy-mangled name (`17h` and 16 hex digits before the final
/// `E`), the crate disambiguators of a v0-mangled one (`Cs`, base-62
/// digits, `_`), and the number the compiler appends to a local copy
/// (`.1027`, `.llvm.4242`). An identifier that happens to hold `Cs`,
/// letters or digits and `_` is widened too: a few more functions match,
/// at no cost.
fn pattern(name: &str) -> String {
    let (name, copy) = match local_copy_suffix(name) {
        Some(at) => (&name[..at], ".*"),
        None => (name, ""),
    };
    let mut out = hashless(name);
    out.push_str(copy);
    out
}

/// Where a `.NNN` or `.llvm.NNN` suffix starts in `name`, if it has one.
fn local_copy_suffix(name: &str) -> Option<usize> {
    let at = name.rfind('.')?;
    let digits = &name[at + 1..];
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let base = &name[..at];
    Some(base.strip_suffix(".llvm").map_or(at, str::len))
}

/// [`pattern`] of a name without a local-copy suffix.
fn hashless(name: &str) -> String {
    let mut name = name.to_owned();
    if name.starts_with("_ZN") && name.len() > 20 {
        let hash = name.len() - 20;
        let tail = &name[hash..];
        if tail.starts_with("17h")
            && tail.ends_with('E')
            && tail[3..19].bytes().all(|b| b.is_ascii_hexdigit())
        {
            name.replace_range(hash + 3..hash + 19, "*");
        }
    }
    if !name.starts_with("_R") {
        return name;
    }
    let mut out = String::with_capacity(name.len());
    let mut rest = name.as_str();
    while let Some(at) = rest.find("Cs") {
        out.push_str(&rest[..at + 2]);
        rest = &rest[at + 2..];
        let digits = rest.bytes().take_while(u8::is_ascii_alphanumeric).count();
        if digits > 0 && rest[digits..].starts_with('_') {
            out.push('*');
            rest = &rest[digits..];
        }
    }
    out.push_str(rest);
    out
}

fn script(patterns: &BTreeSet<String>) -> String {
    let mut out = String::from(
        "/* The functions wininetd runs at start, idle and serving sessions, at the\n\
         \x20* head of its text: the kernel maps a binary's pages in runs of 64 KiB\n\
         \x20* around each page it runs, and with these side by side, far fewer runs\n\
         \x20* are mapped (bench/PROFILE.md, \"Memory\"). Written by bench/hot-text.sh;\n\
         \x20* a function missing here still links, only further away. build.rs\n\
         \x20* passes this script to the linker on Linux. */\n\
         SECTIONS {\n  .text.hot : {\n    *crt1.o(.text)\n",
    );
    for pattern in patterns {
        out.push_str(&format!(
            "    *(.text.{pattern} .text.unlikely.{pattern})\n"
        ));
    }
    out.push_str("  }\n}\nINSERT BEFORE .text;\n");
    out
}

/// The patterns of a script written by [`script`].
fn script_patterns(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("*(.text.")?.split_once(' '))
        .map(|(pattern, _)| pattern.to_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_drop_the_hashes() {
        assert_eq!(
            pattern("_ZN8wininetd6server3run17h0123456789abcdefE"),
            "_ZN8wininetd6server3run17h*E"
        );
        assert_eq!(
            pattern("_RNvNtNtCsjrHSEGnQ3l9_3std2io5stdio6_print"),
            "_RNvNtNtCs*_3std2io5stdio6_print"
        );
        assert_eq!(
            pattern("_RINvMNtCslNYA_4core3strCsgEmfK2I1SDS_3std"),
            "_RINvMNtCs*_4core3strCs*_3std"
        );
        // A local copy's number goes, with the hash before it.
        assert_eq!(
            pattern("_ZN3fmt5write17h0123456789abcdefE.1069"),
            "_ZN3fmt5write17h*E.*"
        );
        assert_eq!(
            pattern("_RNvXsX_NtNtCsjrHSEGnQ3l9_4core3fmt3num3fmt.1027"),
            "_RNvXsX_NtNtCs*_4core3fmt3num3fmt.*"
        );
        assert_eq!(
            pattern("_ZN1a1b17h0123456789abcdefE.llvm.42"),
            "_ZN1a1b17h*E.*"
        );
        assert_eq!(pattern("memcpy.part"), "memcpy.part");
        // Patterns stay as they are.
        for done in ["_ZN3fmt5write17h*E.*", "_RNvNtNtCs*_3std2io5stdio6_print"] {
            assert_eq!(pattern(done), done);
        }
        // Not a hash: too short, or not hex.
        assert_eq!(pattern("_ZN4main17hzzE"), "_ZN4main17hzzE");
        assert_eq!(pattern("main"), "main");
    }

    #[test]
    fn callgrind_names_where_they_are_defined() {
        let text = "ob=(1) /bin/d\nfn=(1) _ZN1a\n0x10 3\nob=(2) ???\nfn=(2) memcpy\n\
                    cob=(1)\ncfn=(3) _ZN1b\ncalls=1 0x20\n0x11 5\nob=(1)\nfn=(3)\n0x20 1\n";
        let mut names: Vec<_> = callgrind_functions(text).into_iter().collect();
        names.sort();
        assert_eq!(names, ["_ZN1a", "_ZN1b", "memcpy"]);
    }

    #[test]
    fn scripts_are_read_back() {
        let patterns: BTreeSet<String> = ["_ZN1a17h*E", "main"].map(String::from).into();
        assert_eq!(script_patterns(&script(&patterns)), patterns);
    }

    #[test]
    fn globs_match_as_ld_does() {
        assert!(glob(b"_ZN1a17h*E", b"_ZN1a17h0123456789abcdefE"));
        assert!(glob(b"_RNvCs*_3std*print", b"_RNvCsjrH_3std2io6_print"));
        assert!(glob(b"a?c", b"abc"));
        assert!(glob(b"*", b""));
        assert!(!glob(b"_ZN1a17h*E", b"_ZN1a17h0123456789abcdefE.1027"));
        assert!(!glob(b"abc", b"abcd"));
        assert!(!glob(b"a*b*c", b"aXbY"));
        let names = ["_ZN1a17h0E", "_ZN1b17h1E", "main"];
        assert!(matches_any("_ZN1b17h*E", &names));
        assert!(matches_any("main", &names));
        assert!(!matches_any("_ZN1c17h*E", &names));
        assert!(!matches_any("mai", &names));
    }

    #[test]
    fn perf_samples_of_the_binary_only() {
        let text = "  wininetd   55c1d05ccb _ZN1a (/bin/d)\n\
                    \x20 wininetd   7f00 memcpy (/lib/libc.so.6)\n\
                    \x20 wininetd   55c1 [unknown] (/bin/d)\n\
                    \x20 perf       55c2 _ZN1b (/bin/d)\n";
        let mut names: Vec<_> = perf_functions(text, Path::new("/bin/d"))
            .into_iter()
            .collect();
        names.sort();
        assert_eq!(names, ["_ZN1a", "_ZN1b"]);
    }
}
