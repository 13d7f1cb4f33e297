//! The crate's top-level modules depend on each other one way: no cycle.
//!
//! A top-level module is `src/X.rs` or `src/X/`; a dependency is any
//! `crate::X` path in its code (comments left out), `crate::{X, …}` groups
//! included. `lib.rs` only declares and re-exports, so it is not a node.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

type Graph = BTreeMap<String, BTreeSet<String>>;

/// Reads the dependency graph of the crate whose sources are in `src`.
fn graph(src: &Path) -> Graph {
    let mut modules = BTreeSet::new();
    for entry in fs::read_dir(src).expect("src/ is readable") {
        let entry = entry.expect("directory entry");
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.path().is_dir() {
            modules.insert(name);
        } else if let Some(stem) = name.strip_suffix(".rs")
            && stem != "lib"
            && stem != "main"
        {
            modules.insert(stem.to_owned());
        }
    }
    let mut graph: Graph = modules
        .iter()
        .map(|m| (m.clone(), BTreeSet::new()))
        .collect();
    for module in &modules {
        let mut files = Vec::new();
        let file = src.join(format!("{module}.rs"));
        if file.is_file() {
            files.push(file);
        }
        collect_rs(&src.join(module), &mut files);
        for file in files {
            let code = strip_comments(&fs::read_to_string(&file).expect("source is readable"));
            for target in crate_paths(&code) {
                if modules.contains(&target) && &target != module {
                    graph.get_mut(module).expect("node").insert(target);
                }
            }
        }
    }
    graph
}

fn collect_rs(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_rs(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Removes `//` and `/* */` comments (doc comments included: a link in a
/// doc is not a dependency). String literals holding `//` are rare enough
/// in this crate not to matter; the cost of a miss is a false edge, never
/// a hidden one.
fn strip_comments(code: &str) -> String {
    let mut out = String::with_capacity(code.len());
    let mut rest = code;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("//") {
            rest = after.find('\n').map_or("", |i| &after[i..]);
        } else if let Some(after) = rest.strip_prefix("/*") {
            rest = after.find("*/").map_or("", |i| &after[i + 2..]);
        } else {
            let c = rest.chars().next().expect("not empty");
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

/// The first segment of every `crate::…` path: `crate::a::b` gives `a`,
/// `crate::{a::b, c}` gives `a` and `c`.
fn crate_paths(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    for (i, _) in code.match_indices("crate::") {
        let before = code[..i].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        let after = &code[i + "crate::".len()..];
        if let Some(group) = after.strip_prefix('{') {
            let group = &group[..group.find('}').unwrap_or(group.len())];
            found.extend(group.split(',').map(ident).filter(|s| !s.is_empty()));
        } else {
            let name = ident(after);
            if !name.is_empty() {
                found.insert(name);
            }
        }
    }
    found
}

/// Every strongly connected component with more than one module.
fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    // Two modules are in one cycle when each reaches the other.
    let reach = |from: &str| -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.to_owned()];
        while let Some(m) = stack.pop() {
            for next in &graph[&m] {
                if seen.insert(next.clone()) {
                    stack.push(next.clone());
                }
            }
        }
        seen
    };
    let reaches: BTreeMap<&String, BTreeSet<String>> =
        graph.keys().map(|m| (m, reach(m))).collect();
    let mut placed = BTreeSet::new();
    let mut out = Vec::new();
    for m in graph.keys() {
        if placed.contains(m) {
            continue;
        }
        let component: Vec<String> = graph
            .keys()
            .filter(|o| *o == m || (reaches[m].contains(*o) && reaches[*o].contains(m)))
            .cloned()
            .collect();
        placed.extend(component.iter().cloned());
        if component.len() > 1 {
            out.push(component);
        }
    }
    out
}

#[test]
fn top_level_modules_form_a_dag() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = graph(&src);
    assert!(
        graph.len() >= 10,
        "expected the crate's modules, found {graph:?}"
    );
    let found = cycles(&graph);
    let edges: Vec<String> = graph
        .iter()
        .map(|(m, deps)| {
            format!(
                "{m} -> {}",
                deps.iter().cloned().collect::<Vec<_>>().join(", ")
            )
        })
        .collect();
    assert!(
        found.is_empty(),
        "import cycles between top-level modules: {found:?}\nedges:\n{}",
        edges.join("\n")
    );
    // The leaves stay leaves, and nothing imports the configuration.
    for leaf in ["event", "error"] {
        assert!(
            graph[leaf].is_empty(),
            "{leaf} depends on {:?}",
            graph[leaf]
        );
    }
    for (m, deps) in &graph {
        assert!(!deps.contains("config"), "{m} depends on config");
    }
    // The request middleware sits beside the pipeline: it needs only the
    // event types, and nothing needs it.
    if let Some(deps) = graph.get("middleware") {
        assert!(
            deps.iter().all(|d| d == "event"),
            "middleware depends on {deps:?}"
        );
    }
    for (m, deps) in &graph {
        assert!(!deps.contains("middleware"), "{m} depends on middleware");
    }
}

#[test]
fn the_check_sees_a_cycle_when_there_is_one() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let src = dir.path();
    fs::create_dir(src.join("a")).unwrap();
    fs::write(
        src.join("a/mod.rs"),
        "use crate::b::B;\n// crate::c in a comment\n",
    )
    .unwrap();
    fs::write(
        src.join("b.rs"),
        "pub(crate) fn f() { crate::{a::x, c}::g() }\n",
    )
    .unwrap();
    fs::write(src.join("c.rs"), "/* crate::a */ pub struct C;\n").unwrap();
    fs::write(
        src.join("lib.rs"),
        "mod a; mod b; mod c; pub use crate::a::*;\n",
    )
    .unwrap();
    let g = graph(src);
    assert_eq!(g["a"], BTreeSet::from(["b".to_owned()]));
    assert_eq!(g["b"], BTreeSet::from(["a".to_owned(), "c".to_owned()]));
    assert!(g["c"].is_empty());
    assert_eq!(cycles(&g), vec![vec!["a".to_owned(), "b".to_owned()]]);
}
