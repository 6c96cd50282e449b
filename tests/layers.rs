//! No import circle inside any crate of the workspace.
//!
//! Each file of a crate is a module (`src/a.rs` and `src/a/mod.rs` are `a`,
//! `src/a/b.rs` is `a::b`). A module depends on another when it names it
//! through `crate::`, `super::` or `self::` paths (in `use` trees,
//! brace groups included, and in code). Edges between a module and its own
//! ancestors or descendants are left out: a parent declares and re-exports
//! its children, a child names its parent's items. What remains must have
//! no cycle: the floors of DESIGN.md, each file importing only files below
//! it. The test names every circle it finds, with its files.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The source roots checked: every library and binary crate of the workspace.
const CRATES: &[&str] = &["core/src", "handlers/src", "bins/src", "support/src", "benches/src"];

/// Known circles, each as its sorted list of modules (`crate-dir: a, b`),
/// waiting for the renovation that removes them. The test fails on any
/// circle not listed here, and on any listed circle that no longer exists
/// (so the list only shrinks).
const KNOWN: &[&str] = &[];

#[test]
fn no_import_circle_in_any_crate() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace root").to_path_buf();
    let mut found = BTreeSet::new();
    for krate in CRATES {
        let dir = root.join(krate);
        let graph = graph(&dir);
        for scc in circles(&graph) {
            found.insert(format!("{krate}: {}", scc.join(", ")));
        }
    }
    let known: BTreeSet<String> = KNOWN.iter().map(|s| s.to_string()).collect();
    let new: Vec<_> = found.difference(&known).collect();
    let gone: Vec<_> = known.difference(&found).collect();
    assert!(new.is_empty(), "import circles (each file imports another of the same circle): {new:#?}");
    assert!(
        gone.is_empty(),
        "these known circles are gone: remove them from KNOWN in tests/layers.rs: {gone:#?}"
    );
}

/// The checker itself: a circle written on purpose is found, and the
/// parent/child edges are not counted.
#[test]
fn the_checker_finds_a_circle_and_ignores_parents() {
    let dir = switchboard_test_support::temp_dir("layers");
    let src = dir.path();
    let write = |p: &str, s: &str| {
        let p = src.join(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, s).unwrap();
    };
    write("lib.rs", "mod a; mod b; mod c; mod d;\npub use d::D;\n");
    write("a.rs", "use crate::{b::B, c};\n");
    write("b.rs", "pub struct B;\nfn f() { crate::c::g(); }\n");
    write("c.rs", "// use crate::a; in a comment is no import\nuse super::a::A;\n");
    write("d/mod.rs", "mod e;\npub use self::e::E;\npub struct D;\n");
    write("d/e.rs", "use super::D;\nuse crate::d::D as Again;\n");
    let g = graph(src);
    assert_eq!(circles(&g), vec![vec!["a".to_string(), "b".into(), "c".into()]]);
    assert!(!g["d::e"].contains("d") && !g["d"].contains("d::e"), "{g:?}");
}

/// Module name → the modules it depends on.
fn graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    collect(src, &mut files);
    let modules: BTreeMap<String, PathBuf> =
        files.iter().filter_map(|f| module_of(src, f).map(|m| (m, f.clone()))).collect();
    let mut g = BTreeMap::new();
    for (module, file) in &modules {
        let text = std::fs::read_to_string(file).expect("read a source file");
        let here: Vec<&str> = if module.is_empty() { Vec::new() } else { module.split("::").collect() };
        let mut deps = BTreeSet::new();
        for path in paths(&strip_comments(&text)) {
            if let Some(target) = resolve(&here, &path, &modules) {
                let related = target == *module
                    || target.is_empty()
                    || module.is_empty()
                    || target.starts_with(&format!("{module}::"))
                    || module.starts_with(&format!("{target}::"));
                if !related {
                    deps.insert(target);
                }
            }
        }
        g.insert(module.clone(), deps);
    }
    g
}

/// Every `.rs` file under `dir`, except the binaries' own roots in `bin/`
/// (each is a crate of its own).
fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            if p.file_name().is_some_and(|n| n != "bin") {
                collect(&p, out);
            }
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// `a/b.rs` → `a::b`; `a/mod.rs` → `a`; `lib.rs` and `main.rs` → the root (``).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let last = parts.pop()?;
    let stem = last.strip_suffix(".rs")?;
    if parts.is_empty() && (stem == "lib" || stem == "main") {
        return Some(String::new());
    }
    if stem != "mod" {
        parts.push(stem.to_string());
    }
    Some(parts.join("::"))
}

/// The source without `//` comments (doc comments included) and string
/// literals, so paths in prose are not imports.
fn strip_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let mut in_str = false;
        let mut prev = ' ';
        let mut cut = line.len();
        for (i, ch) in line.char_indices() {
            if ch == '"' && prev != '\\' {
                in_str = !in_str;
            } else if !in_str && ch == '/' && prev == '/' {
                cut = i - 1;
                break;
            }
            prev = ch;
        }
        let kept = &line[..cut];
        let mut s = String::new();
        let mut in_str = false;
        let mut prev = ' ';
        for ch in kept.chars() {
            if ch == '"' && prev != '\\' {
                in_str = !in_str;
                s.push('"');
            } else if !in_str {
                s.push(ch);
            }
            prev = ch;
        }
        out.push_str(&s);
        out.push('\n');
    }
    out
}

/// Every path that starts with `crate`, `super` or `self`, as segments,
/// with `use` brace groups expanded (`crate::{a::X, b}` → `crate::a::X`,
/// `crate::b`).
fn paths(text: &str) -> Vec<Vec<String>> {
    let tokens = tokenize(text);
    let mut out = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let t = tokens[i].as_str();
        let starts = (t == "crate" || t == "super" || t == "self")
            && tokens.get(i + 1).is_some_and(|n| n == "::")
            && (i == 0 || tokens[i - 1] != "::");
        if starts {
            let (end, found) = tree(&tokens, i, Vec::new());
            out.extend(found);
            i = end.max(i + 1);
        } else {
            i += 1;
        }
    }
    out
}

/// Expands the use tree starting at `tokens[i]` under `prefix`: the index
/// after it and the paths it names.
fn tree(tokens: &[String], mut i: usize, mut prefix: Vec<String>) -> (usize, Vec<Vec<String>>) {
    loop {
        match tokens.get(i).map(String::as_str) {
            Some("{") => {
                let mut all = Vec::new();
                i += 1;
                loop {
                    match tokens.get(i).map(String::as_str) {
                        Some("}") => return (i + 1, all),
                        Some(",") => i += 1,
                        None => return (i, all),
                        _ => {
                            let (end, found) = tree(tokens, i, prefix.clone());
                            all.extend(found);
                            i = end.max(i + 1);
                        }
                    }
                }
            }
            Some(t) if is_ident(t) => {
                prefix.push(t.to_string());
                if tokens.get(i + 1).is_some_and(|n| n == "::") {
                    i += 2;
                } else {
                    return (i + 1, vec![prefix]);
                }
            }
            _ => return (i, vec![prefix]),
        }
    }
}

fn is_ident(t: &str) -> bool {
    t.chars().next().is_some_and(|c| c.is_alphabetic() || c == '_')
        && t.chars().all(|c| c.is_alphanumeric() || c == '_')
}

/// Identifiers, `::` and single punctuation characters.
fn tokenize(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_alphanumeric() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push(chars[start..i].iter().collect());
        } else if c == ':' && chars.get(i + 1) == Some(&':') {
            out.push("::".into());
            i += 2;
        } else {
            if !c.is_whitespace() {
                out.push(c.to_string());
            }
            i += 1;
        }
    }
    out
}

/// The deepest module of `modules` that `path`, written in module `here`,
/// names.
fn resolve(here: &[&str], path: &[String], modules: &BTreeMap<String, PathBuf>) -> Option<String> {
    let mut at: Vec<String> = Vec::new();
    let mut rest = path;
    match path.first().map(String::as_str) {
        Some("crate") => rest = &path[1..],
        Some("self") | Some("super") => {
            at = here.iter().map(|s| s.to_string()).collect();
            while let Some(first) = rest.first() {
                match first.as_str() {
                    "self" => rest = &rest[1..],
                    "super" => {
                        at.pop()?;
                        rest = &rest[1..];
                    }
                    _ => break,
                }
            }
        }
        _ => return None,
    }
    for seg in rest {
        let mut next = at.clone();
        next.push(seg.clone());
        if modules.contains_key(&next.join("::")) {
            at = next;
        } else {
            break;
        }
    }
    Some(at.join("::"))
}

/// The strongly connected components with more than one module (Tarjan),
/// each sorted, in sorted order.
fn circles(g: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct State<'a> {
        g: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        next: usize,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        s.on_stack.insert(v);
        let g = s.g;
        for w in g.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !g.contains_key(w) {
                continue;
            }
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(lw);
            } else if s.on_stack.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut scc = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                scc.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if scc.len() > 1 {
                scc.sort();
                s.out.push(scc);
            }
        }
    }
    let mut s = State {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in g.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.out.sort();
    s.out
}
