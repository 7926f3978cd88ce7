//! The modules of each crate form layers: no module uses, directly or through others, a module
//! that uses it back (DESIGN.md "Layout"). A circle makes a module impossible to read, test or
//! move alone; this test names the first one it finds in each crate.
//!
//! A module is a file or folder directly under a crate's `src/` (a folder's files are one
//! module); a use is any `crate::<module>` path in code (comments and doc links do not count).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Top-level module name -> the top-level modules its code names.
fn module_uses(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut uses: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut files = Vec::new();
    collect_rust_files(src, &mut files);
    for file in files {
        let relative = file.strip_prefix(src).expect("under src");
        let first = relative
            .components()
            .next()
            .expect("a component")
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_owned();
        if first == "lib" {
            continue; // The crate root declares every module; it is not one of the layers.
        }
        let text = std::fs::read_to_string(&file).expect("readable source");
        let entry = uses.entry(first.clone()).or_default();
        for line in text.lines() {
            let code = line.split("//").next().unwrap_or("");
            let mut rest = code;
            while let Some(at) = rest.find("crate::") {
                rest = &rest[at + "crate::".len()..];
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() && name != first {
                    entry.insert(name);
                }
            }
        }
    }
    uses
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
