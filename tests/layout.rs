//! The modules of each crate form layers: no module uses, directly or through others, a module
//! that uses it back (DESIGN.md "Layout"). A circle makes a module impossible to read, test or
//! move alone; this test names the first one it finds in each crate.
//!
//! A module is a file or folder directly under a crate's `src/` (a folder's files are one
//! module); a use is any `crate::<module>` path in code, grouped (`crate::{a, b::X}`) or
//! through a name the crate root re-exports (`crate::Engine` uses `engine`); comments and doc
//! links do not count.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Top-level module name -> the top-level modules its code names.
fn module_uses(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    collect_rust_files(src, &mut files);
    let module_of = |file: &Path| -> String {
        let relative = file.strip_prefix(src).expect("under src");
        let first = relative.components().next().expect("a component");
        first
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_owned()
    };
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(f)).collect();
    // Names the crate root re-exports (`pub use engine::{Engine, Lookup};`) stand for their
    // module: `crate::Engine` is a use of `engine`.
    let mut re_exports: BTreeMap<String, String> = BTreeMap::new();
    for root in ["lib.rs", "main.rs"] {
        let Ok(text) = std::fs::read_to_string(src.join(root)) else {
            continue;
        };
        for statement in code_of(&text).split(';') {
            let Some(path) = statement.trim().strip_prefix("pub use ") else {
                continue;
            };
            let Some((module, names)) = path.split_once("::") else {
                continue;
            };
            if modules.contains(module) {
                for name in names.split(|c: char| !(c.is_alphanumeric() || c == '_')) {
                    if !name.is_empty() {
                        re_exports.insert(name.to_owned(), module.to_owned());
                    }
                }
            }
        }
    }
    let mut uses: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let module = module_of(file);
        if module == "lib" || module == "main" {
            continue; // The crate root declares every module; it is not one of the layers.
        }
        let text = code_of(&std::fs::read_to_string(file).expect("readable source"));
        let entry = uses.entry(module.clone()).or_default();
        for name in crate_paths(&text) {
            let target = re_exports.get(&name).cloned().unwrap_or(name);
            if target != module && modules.contains(&target) {
                entry.insert(target);
            }
        }
    }
    uses
}

/// `text` without its comments (line comments, doc comments included).
fn code_of(text: &str) -> String {
    text.lines()
        .map(|line| line.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The first segment of every `crate::` path in `code`, groups included
/// (`use crate::{a::X, b};` names `a` and `b`).
fn crate_paths(code: &str) -> Vec<String> {
    let identifier = |text: &str| -> String {
        text.trim_start()
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let mut names = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // The top-level items of the group, up to its closing brace.
            let mut depth = 0usize;
            let mut item_start = 0;
            for (index, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        names.push(identifier(&group[item_start..index]));
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        names.push(identifier(&group[item_start..index]));
                        item_start = index + 1;
                    }
                    _ => {}
                }
            }
        } else {
            names.push(identifier(rest));
        }
    }
    names.retain(|name| !name.is_empty() && name != "self");
    names
}

fn collect_rust_files(dir: &Path, files: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable folder") {
        let path = entry.expect("folder entry").path();
        if path.is_dir() {
            collect_rust_files(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

/// A circle through `start`, if any (depth-first search over the use graph).
fn circle_from(
    uses: &BTreeMap<String, BTreeSet<String>>,
    path: &mut Vec<String>,
    done: &mut BTreeSet<String>,
) -> Option<Vec<String>> {
    let here = path.last().expect("non-empty path").clone();
    for next in uses.get(&here).into_iter().flatten() {
        if let Some(at) = path.iter().position(|m| m == next) {
            let mut circle = path[at..].to_vec();
            circle.push(next.clone());
            return Some(circle);
        }
        if done.contains(next) {
            continue;
        }
        path.push(next.clone());
        if let Some(circle) = circle_from(uses, path, done) {
            return Some(circle);
        }
        path.pop();
    }
    done.insert(here);
    None
}

/// The first import circle among `krate`'s modules, if any.
fn first_circle(krate: &str) -> Option<Vec<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(krate)
        .join("src");
    let uses = module_uses(&src);
    assert!(
        !uses.is_empty(),
        "{krate}: no modules found under {}",
        src.display()
    );
    let mut done = BTreeSet::new();
    for module in uses.keys() {
        if done.contains(module) {
            continue;
        }
        let mut path = vec![module.clone()];
        if let Some(circle) = circle_from(&uses, &mut path, &mut done) {
            return Some(circle);
        }
    }
    None
}

#[test]
fn no_module_uses_a_module_that_uses_it_back() {
    let circles: Vec<String> = CRATES
        .iter()
        .filter_map(|krate| first_circle(krate).map(|c| format!("{krate}: {}", c.join(" -> "))))
        .collect();
    assert!(
        circles.is_empty(),
        "import circles:\n{}",
        circles.join("\n")
    );
}

/// Every crate of the workspace with modules of its own.
const CRATES: [&str; 7] = [
    "model",
    "actors",
    "inference",
    "storage",
    "api",
    "sim",
    "cluster",
];

#[test]
fn grouped_uses_and_circles_are_seen() {
    let code = code_of(
        "use crate::{\n    engine::Engine, keys,\n    shard::{A, B},\n};\n// crate::ignored\nlet x = crate::persist::decode();",
    );
    assert_eq!(
        crate_paths(&code),
        vec!["engine", "keys", "shard", "persist"]
    );
    let uses: BTreeMap<String, BTreeSet<String>> =
        [("a", vec!["b"]), ("b", vec!["c"]), ("c", vec!["a"])]
            .into_iter()
            .map(|(m, to)| (m.to_owned(), to.into_iter().map(str::to_owned).collect()))
            .collect();
    let mut path = vec!["a".to_owned()];
    assert_eq!(
        circle_from(&uses, &mut path, &mut BTreeSet::new()),
        Some(
            vec!["a", "b", "c", "a"]
                .into_iter()
                .map(str::to_owned)
                .collect()
        )
    );
}
