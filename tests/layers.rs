//! The module layers: no module imports one above it, and modules of one
//! layer do not import each other in a circle.
//!
//! Bottom to top: the codec and plain data types; `config` (plain data,
//! parsed and validated); the components built from config; the `gateway`
//! that holds them all; `session`; the program (`server`, `reload`,
//! `simulate`, `signals`). A change that makes a lower layer reach up — say
//! `config` loading certificates through `tls`, or `metrics` naming the
//! gateway — fails here, with the file and the import.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every top-level module of the library and its layer (0 is the bottom).
const LAYERS: &[(&str, u8)] = &[
    ("proto", 0),
    ("body", 0),
    ("message", 0),
    ("stream", 0),
    ("shutdown", 0),
    ("facts", 0),
    ("authres", 0),
    ("filter", 0),
    ("config", 1),
    ("tls", 2),
    ("auth", 2),
    ("relay", 2),
    ("protection", 2),
    ("proxy_protocol", 2),
    ("dns", 2),
    ("checks", 2),
    ("rules", 2),
    ("audit", 2),
    ("metrics", 2),
    ("milter", 2),
    ("spool", 2),
    ("upstream", 2),
    ("dkim", 2),
    ("quarantine", 2),
    ("gateway", 3),
    ("session", 4),
    ("server", 5),
    ("reload", 5),
    ("simulate", 5),
    ("signals", 5),
    ("rule_stats", 5),
    ("rule_tests", 5),
    ("quarantine_cli", 5),
    ("quarantine_api", 5),
];

/// The top-level module a source file belongs to (`src/session/mail.rs` →
/// `session`); `None` for `lib.rs` and `main.rs`, which may use anything.
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (name != "lib" && name != "main").then(|| name.to_string())
}

/// The modules a file names as `crate::name`, also inside `crate::{a, b::c}`.
fn imports(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    found.insert(name);
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.insert(name);
            }
        }
    }
    found
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Module → the modules it imports, with one file that does it.
fn graph() -> BTreeMap<String, BTreeMap<String, PathBuf>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut graph: BTreeMap<String, BTreeMap<String, PathBuf>> = BTreeMap::new();
    for file in files {
        let Some(module) = module_of(&src, &file) else {
            continue;
        };
        let text = std::fs::read_to_string(&file).unwrap();
        let deps = graph.entry(module.clone()).or_default();
        for dep in imports(&text) {
            if dep != module {
                deps.entry(dep).or_insert_with(|| file.clone());
            }
        }
    }
    graph
}

fn layer(module: &str) -> Option<u8> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|(_, l)| *l)
}

#[test]
fn every_module_has_a_layer() {
    let unknown: Vec<String> = graph()
        .keys()
        .filter(|m| layer(m).is_none())
        .cloned()
        .collect();
    assert!(
        unknown.is_empty(),
        "modules without a layer in tests/layers.rs: {unknown:?}"
    );
}

#[test]
fn no_module_imports_one_above_it() {
    let mut wrong = Vec::new();
    for (module, deps) in graph() {
        let Some(own) = layer(&module) else { continue };
        for (dep, file) in deps {
            match layer(&dep) {
                Some(l) if l > own => wrong.push(format!(
                    "{} (layer {own}) imports crate::{dep} (layer {l})",
                    file.display()
                )),
                _ => {}
            }
        }
    }
    assert!(wrong.is_empty(), "upward imports:\n{}", wrong.join("\n"));
}

#[test]
fn modules_of_one_layer_import_each_other_in_no_circle() {
    let graph = graph();
    // Depth-first search for a path back to the start, within one layer.
    fn reaches(
        graph: &BTreeMap<String, BTreeMap<String, PathBuf>>,
        from: &str,
        target: &str,
        seen: &mut BTreeSet<String>,
        path: &mut Vec<String>,
    ) -> bool {
        let Some(deps) = graph.get(from) else {
            return false;
        };
        for dep in deps.keys() {
            if layer(dep) != layer(target) {
                continue;
            }
            if dep == target {
                path.push(dep.clone());
                return true;
            }
            if seen.insert(dep.clone()) {
                path.push(dep.clone());
                if reaches(graph, dep, target, seen, path) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    for module in graph.keys() {
        let mut path = vec![module.clone()];
        if reaches(&graph, module, module, &mut BTreeSet::new(), &mut path) {
            panic!("import circle: {}", path.join(" -> "));
        }
    }
}

#[test]
fn the_scanner_sees_grouped_and_nested_imports() {
    let found = imports("use crate::{config::Config, proto};\nlet x = crate::rules::f();");
    let want: BTreeSet<String> = ["config", "proto", "rules"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(found, want);
}
