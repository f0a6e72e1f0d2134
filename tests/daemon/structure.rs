//! The code's shape: the top-level modules of `src/` depend on each other
//! without a cycle (a stage, or the platform, that reached back up would
//! make every change a change in two places). Read from the source as a
//! reviewer would: each `crate::MODULE` a file names, test modules aside.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("read src/") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level modules each top-level module names (`crate::X`).
fn dependencies() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let modules: BTreeSet<String> = files
        .iter()
        .filter_map(|f| {
            let rel = f.strip_prefix(&src).ok()?;
            let first = rel.components().next()?.as_os_str().to_str()?;
            Some(first.trim_end_matches(".rs").to_owned())
        })
        .filter(|m| m != "main" && m != "lib")
        .collect();
    let mut deps: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let rel = file.strip_prefix(&src).expect("under src/");
        let first = rel.components().next().expect("a component");
        let module = first
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_owned();
        if !modules.contains(&module) {
            continue;
        }
        let text = fs::read_to_string(file).expect("read a source file");
        // What only the unit tests use is not part of the shape.
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        for (at, _) in code.match_indices("crate::") {
            let name: String = code[at + "crate::".len()..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            // `crate::Error` is the `error` module's.
            let name = if name == "Error" {
                "error".to_owned()
            } else {
                name
            };
            if name != module && modules.contains(&name) {
                deps.entry(module.clone()).or_default().insert(name);
            }
        }
    }
    deps
}

/// A cycle through `from`, if there is one.
fn cycle(
    deps: &BTreeMap<String, BTreeSet<String>>,
    path: &mut Vec<String>,
    done: &mut BTreeSet<String>,
) -> Option<Vec<String>> {
    let here = path.last().expect("a start").clone();
    for next in deps.get(&here).into_iter().flatten() {
        if let Some(at) = path.iter().position(|m| m == next) {
            let mut found = path[at..].to_vec();
            found.push(next.clone());
            return Some(found);
        }
        if done.contains(next) {
            continue;
        }
        path.push(next.clone());
        if let Some(found) = cycle(deps, path, done) {
            return Some(found);
        }
        path.pop();
    }
    done.insert(here);
    None
}

#[test]
fn the_modules_depend_on_each_other_without_a_cycle() {
    let deps = dependencies();
    assert!(
        deps.get("server").is_some_and(|d| d.contains("connection")),
        "the scan sees server → connection: {deps:?}"
    );
    let mut done = BTreeSet::new();
    for start in deps.keys() {
        let found = cycle(&deps, &mut vec![start.clone()], &mut done);
        assert!(found.is_none(), "a cycle: {}", found.unwrap().join(" → "));
    }
    for module in ["platform", "config", "admit"] {
        for above in ["server", "connection", "start", "supervise", "cli"] {
            assert!(
                !deps.get(module).is_some_and(|d| d.contains(above)),
                "{module} depends on {above}: {deps:?}"
            );
        }
    }
}
