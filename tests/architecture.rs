//! Architecture check: the top-level modules of `src/` must not depend on each other in a cycle.
//!
//! Every `.rs` file under `src/` (except `src/main.rs` and `src/bin/`, which sit on top and
//! cannot be part of a library cycle) is tokenised with plain string scanning: comments,
//! string and character literals are skipped, so a `crate::x` inside a doc comment or a string
//! is not a dependency. A file belongs to the top-level module of its path (`src/foo.rs` and
//! `src/foo/**` belong to `foo`; `src/lib.rs` is the crate root, node `lib`). These references
//! count as an edge from the file's module to another top-level module:
//!
//! - paths from the crate root: `crate::foo::..`, `$crate::foo::..`, and grouped imports
//!   `use crate::{foo, bar::{X, Y}}` (every branch of every nested group);
//! - `super::`/`self::` paths that climb out to the crate root and name another module;
//! - bare `foo::..` paths written in the crate root itself (`lib.rs`);
//! - `#[macro_export]` macros, called as `crate::name!` or bare `name!`: an edge to the module
//!   that defines the macro;
//! - `crate::Item` where `Item` is not a module: an edge to the crate root (`lib`), which
//!   declares every module and so closes a cycle.
//!
//! Modules that `main.rs` declares (`limits`, `passwd`, `store_cmd`) belong to the binary: their
//! `crate::` is the binary's root (`main`) and their `starling::foo` names the library's `foo`.
//!
//! The graph is split into strongly connected components (Tarjan); any component with more
//! than one module is a cycle, reported with one example file and line for every edge in it.
//! Run it with `cargo test --test architecture`; `-- --nocapture` also prints the whole graph.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// One token of Rust source, with the line it starts on.
#[derive(Clone, Debug, PartialEq)]
enum Tok {
    /// An identifier or keyword (`$crate` is one identifier; raw identifiers lose their `r#`).
    Ident(String),
    /// A string literal's contents (only `#[path = ".."]` reads them).
    Str(String),
    /// `::`.
    PathSep,
    /// Any other punctuation character.
    Punct(char),
}

/// Splits `src` into tokens, dropping comments (nested block comments included), numbers,
/// character literals and lifetimes.
fn tokenize(src: &str) -> Vec<(Tok, usize)> {
    let c: Vec<char> = src.chars().collect();
    let at = |i: usize| c.get(i).copied().unwrap_or('\0');
    let is_ident_start = |ch: char| ch == '_' || ch.is_alphabetic();
    let is_ident = |ch: char| ch == '_' || ch.is_alphanumeric();
    let mut out = Vec::new();
    let (mut i, mut line) = (0, 1);
    while i < c.len() {
        let ch = c[i];
        if ch == '\n' {
            line += 1;
            i += 1;
        } else if ch.is_whitespace() {
            i += 1;
        } else if ch == '/' && at(i + 1) == '/' {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if ch == '/' && at(i + 1) == '*' {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && at(i + 1) == '*' {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    line += usize::from(c[i] == '\n');
                    i += 1;
                }
            }
        } else if let Some((hashes, body)) = raw_string_start(&c, i) {
            // r"..", r#".."#, br"..": no escapes; ends at a quote followed by `hashes` #s.
            let start_line = line;
            let mut j = body;
            let mut s = String::new();
            while j < c.len() {
                if c[j] == '"' && (1..=hashes).all(|k| at(j + k) == '#') {
                    break;
                }
                line += usize::from(c[j] == '\n');
                s.push(c[j]);
                j += 1;
            }
            out.push((Tok::Str(s), start_line));
            i = j + 1 + hashes;
        } else if ch == '"' || (ch == 'b' && at(i + 1) == '"') {
            let start_line = line;
            let mut j = if ch == 'b' { i + 2 } else { i + 1 };
            let mut s = String::new();
            while j < c.len() && c[j] != '"' {
                if c[j] == '\\' {
                    s.push(at(j + 1));
                    line += usize::from(at(j + 1) == '\n');
                    j += 2;
                } else {
                    line += usize::from(c[j] == '\n');
                    s.push(c[j]);
                    j += 1;
                }
            }
            out.push((Tok::Str(s), start_line));
            i = j + 1;
        } else if ch == '\'' || (ch == 'b' && at(i + 1) == '\'') {
            let q = if ch == 'b' { i + 1 } else { i };
            if at(q + 1) == '\\' {
                // An escaped character literal: '\n', '\'', '\u{1F600}'.
                let mut j = q + 3;
                while j < c.len() && c[j] != '\'' {
                    j += 1;
                }
                i = j + 1;
            } else if at(q + 2) == '\'' {
                i = q + 3; // 'x'
            } else {
                // A lifetime or a label: skip the quote and its name.
                i = q + 1;
                while i < c.len() && is_ident(c[i]) {
                    i += 1;
                }
            }
        } else if ch.is_ascii_digit() {
            while i < c.len() && is_ident(c[i]) {
                i += 1;
            }
        } else if (ch == '$' && c[i + 1..].starts_with(&['c', 'r', 'a', 't', 'e']))
            || is_ident_start(ch)
        {
            let mut j = i + 1;
            if ch == 'r' && at(i + 1) == '#' && is_ident_start(at(i + 2)) {
                j = i + 2; // r#ident
            }
            let start = if j == i + 2 { j } else { i };
            while j < c.len() && is_ident(c[j]) {
                j += 1;
            }
            out.push((Tok::Ident(c[start..j].iter().collect()), line));
            i = j;
        } else if ch == ':' && at(i + 1) == ':' {
            out.push((Tok::PathSep, line));
            i += 2;
        } else {
            out.push((Tok::Punct(ch), line));
            i += 1;
        }
    }
    out
}

/// If a raw string (`r".."`, `r#".."#`, `br".."`) starts at `i`: its number of `#`s and the
/// index of its first content character.
fn raw_string_start(c: &[char], i: usize) -> Option<(usize, usize)> {
    let mut j = i;
    if c.get(j) == Some(&'b') {
        j += 1;
    }
    if c.get(j) != Some(&'r') || (j > 0 && i > 0 && c[i - 1].is_alphanumeric()) {
        return None;
    }
    j += 1;
    let mut hashes = 0;
    while c.get(j) == Some(&'#') {
        hashes += 1;
        j += 1;
    }
    (c.get(j) == Some(&'"')).then_some((hashes, j + 1))
}

/// Which crate a file is compiled into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Krate {
    Lib,
    Bin,
}

impl Krate {
    /// The graph node of this crate's root.
    fn root(self) -> &'static str {
        match self {
            Krate::Lib => "lib",
            Krate::Bin => "main",
        }
    }
}

/// One reference from a file to another top-level module.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Edge {
    from: String,
    to: String,
    file: String,
    line: usize,
}

/// The module dependency graph: for every edge, the first reference found (file, line).
type Graph = BTreeMap<String, BTreeMap<String, (String, usize)>>;

/// A source file's module path from its path under `src/` (`router/trie/tests.rs` is
/// `["router", "trie", "tests"]`, `lib.rs` and `main.rs` are the root, `[]`).
fn default_module_path(rel: &str) -> Vec<String> {
    let rel = rel.strip_suffix(".rs").unwrap_or(rel);
    let mut parts: Vec<String> = rel.split('/').map(str::to_string).collect();
    if parts.last().is_some_and(|p| p == "mod") || parts == ["lib"] || parts == ["main"] {
        parts.pop();
    }
    parts
}

/// `mod name;` declarations of a file: (inline module nesting + name, `#[path]` value, line).
fn mod_decls(toks: &[(Tok, usize)]) -> Vec<(Vec<String>, Option<String>, usize)> {
    let mut out = Vec::new();
    let mut nest: Vec<(String, usize)> = Vec::new();
    let mut depth = 0;
    let mut path_attr: Option<String> = None;
    for (i, (t, line)) in toks.iter().enumerate() {
        match t {
            Tok::Punct('{') => depth += 1,
            Tok::Punct('}') => {
                depth -= 1;
                if nest.last().is_some_and(|(_, d)| *d == depth) {
                    nest.pop();
                }
            }
            Tok::Ident(k) if k == "path" => {
                if let (Some((Tok::Punct('='), _)), Some((Tok::Str(p), _))) =
                    (toks.get(i + 1), toks.get(i + 2))
                {
                    path_attr = Some(p.clone());
                }
            }
            Tok::Ident(k) if k == "mod" => {
                if let Some((Tok::Ident(name), _)) = toks.get(i + 1) {
                    match toks.get(i + 2) {
                        Some((Tok::Punct(';'), _)) => {
                            let mut p: Vec<String> = nest.iter().map(|(n, _)| n.clone()).collect();
                            p.push(name.clone());
                            out.push((p, path_attr.take(), *line));
                        }
                        Some((Tok::Punct('{'), _)) => nest.push((name.clone(), depth)),
                        _ => {}
                    }
                }
            }
            Tok::Punct(';') => path_attr = None,
            _ => {}
        }
    }
    out
}

/// Parses a use tree or path continuing at `i` (just after a `::`) with the segments `prefix`
/// already resolved; pushes every complete path with its line. Returns the next index.
fn parse_tree(
    toks: &[(Tok, usize)],
    mut i: usize,
    prefix: Vec<String>,
    out: &mut Vec<(Vec<String>, usize)>,
) -> usize {
    let mut segs = prefix;
    loop {
        let line = toks.get(i).map_or(0, |t| t.1);
        match toks.get(i).map(|t| &t.0) {
            Some(Tok::Ident(s)) if s != "as" => {
                segs.push(s.clone());
                i += 1;
            }
            Some(Tok::Punct('{')) => {
                i += 1;
                loop {
                    match toks.get(i).map(|t| &t.0) {
                        None => return i,
                        Some(Tok::Punct('}')) => return i + 1,
                        Some(Tok::Punct(',')) => i += 1,
                        Some(_) => {
                            let next = parse_tree(toks, i, segs.clone(), out);
                            if next == i {
                                return i; // not a use tree after all
                            }
                            i = next;
                        }
                    }
                }
            }
            Some(Tok::Punct('*')) => {
                segs.push("*".to_string());
                out.push((segs, line));
                return i + 1;
            }
            _ => {
                out.push((segs, line));
                return i;
            }
        }
        if toks.get(i).map(|t| &t.0) == Some(&Tok::PathSep) {
            i += 1;
        } else {
            if toks.get(i).map(|t| &t.0) == Some(&Tok::Ident("as".into())) {
                i += 2; // `as alias`
            }
            out.push((segs, line));
            return i;
        }
    }
}

/// Everything the analysis knows about one file.
struct FileInfo {
    rel: String,
    krate: Krate,
    module: Vec<String>,
    toks: Vec<(Tok, usize)>,
}

/// Builds the module graph of a source set: `files` are (path relative to `src/`, contents).
/// Returns the edges (all references, deduplicated per graph edge later) and the nodes.
fn analyze(files: &[(String, String)]) -> (Vec<Edge>, BTreeSet<String>) {
    let mut infos: Vec<FileInfo> = files
        .iter()
        .filter(|(rel, _)| rel != "main.rs" && !rel.starts_with("bin/"))
        .map(|(rel, src)| FileInfo {
            rel: rel.clone(),
            krate: Krate::Lib,
            module: default_module_path(rel),
            toks: tokenize(src),
        })
        .collect();
    let top_decls = |name: &str| -> BTreeSet<String> {
        files
            .iter()
            .find(|(rel, _)| rel == name)
            .map(|(_, src)| mod_decls(&tokenize(src)))
            .unwrap_or_default()
            .into_iter()
            .filter(|(p, _, _)| p.len() == 1)
            .map(|(p, _, _)| p[0].clone())
            .collect()
    };
    let bin_mods = top_decls("main.rs");
    let mut lib_mods: BTreeSet<String> = top_decls("lib.rs");
    // `#[path]` files take the module path their declaration gives them (two passes: a
    // declaring file may itself have been moved by a `#[path]`).
    for _ in 0..2 {
        let mut moved = Vec::new();
        for f in &infos {
            let dir = Path::new(&f.rel).parent().unwrap_or(Path::new(""));
            for (nest, attr, _) in mod_decls(&f.toks) {
                if let Some(p) = attr {
                    let target = dir.join(p).to_string_lossy().replace('\\', "/");
                    let mut m = f.module.clone();
                    m.extend(nest);
                    moved.push((target, m));
                }
            }
        }
        for (target, m) in moved {
            if let Some(f) = infos.iter_mut().find(|f| f.rel == target) {
                f.module = m;
            }
        }
    }
    for f in &mut infos {
        if f.module.first().is_some_and(|m| bin_mods.contains(m)) {
            f.krate = Krate::Bin;
        } else if let Some(m) = f.module.first() {
            lib_mods.insert(m.clone()); // a file lib.rs forgot still names its module
        }
    }
    // #[macro_export] macros live at the crate root; they belong to their defining module.
    let mut macros: BTreeMap<(bool, String), String> = BTreeMap::new();
    for f in &infos {
        for (i, (t, _)) in f.toks.iter().enumerate() {
            if *t != Tok::Ident("macro_export".into()) {
                continue;
            }
            let rest = &f.toks[i..f.toks.len().min(i + 12)];
            if let Some(k) = rest
                .iter()
                .position(|t| t.0 == Tok::Ident("macro_rules".into()))
            {
                if let Some((Tok::Ident(name), _)) = rest.get(k + 2) {
                    let owner = f
                        .module
                        .first()
                        .cloned()
                        .unwrap_or_else(|| f.krate.root().into());
                    macros.insert((f.krate == Krate::Lib, name.clone()), owner);
                }
            }
        }
    }
    let mut nodes: BTreeSet<String> = lib_mods.clone();
    nodes.extend(bin_mods.iter().cloned());
    nodes.insert("lib".into());
    let mut edges = Vec::new();
    for f in &infos {
        let from = f
            .module
            .first()
            .cloned()
            .unwrap_or_else(|| f.krate.root().into());
        let own_mods = if f.krate == Krate::Lib {
            &lib_mods
        } else {
            &bin_mods
        };
        // The node an absolute path `segs` (from the root of `krate`) refers to.
        let target = |lib: bool, segs: &[String], bang: bool| -> Option<String> {
            let mods = if lib { &lib_mods } else { &bin_mods };
            let root = if lib { "lib" } else { "main" };
            let first = segs.first()?;
            if mods.contains(first) {
                Some(first.clone())
            } else if let Some(owner) = macros.get(&(lib, first.clone())) {
                Some(owner.clone())
            } else if bang || first == "self" {
                None
            } else {
                Some(root.to_string())
            }
        };
        let t = &f.toks;
        let mut nest: Vec<(String, usize)> = Vec::new();
        let mut depth = 0;
        let mut i = 0;
        while i < t.len() {
            let prev = i.checked_sub(1).map(|p| &t[p].0);
            let after_sep = matches!(prev, Some(Tok::PathSep) | Some(Tok::Punct('.')));
            let next_is_sep = t.get(i + 1).map(|x| &x.0) == Some(&Tok::PathSep);
            let mut cur: Vec<String> = f.module.clone();
            cur.extend(nest.iter().map(|(n, _)| n.clone()));
            let line = t[i].1;
            let mut base: Option<(bool, Vec<String>, usize)> = None; // (lib crate?, path, next)
            match &t[i].0 {
                Tok::Punct('{') => depth += 1,
                Tok::Punct('}') => {
                    depth -= 1;
                    if nest.last().is_some_and(|(_, d)| *d == depth) {
                        nest.pop();
                    }
                }
                Tok::Ident(k) if k == "mod" => {
                    if let (Some((Tok::Ident(n), _)), Some((Tok::Punct('{'), _))) =
                        (t.get(i + 1), t.get(i + 2))
                    {
                        nest.push((n.clone(), depth));
                    }
                }
                // A bare call of an exported macro: `name!(..)`.
                Tok::Ident(k)
                    if !after_sep
                        && t.get(i + 1).map(|x| &x.0) == Some(&Tok::Punct('!'))
                        && macros.contains_key(&(f.krate == Krate::Lib, k.clone())) =>
                {
                    edges.push(Edge {
                        from: from.clone(),
                        to: macros[&(f.krate == Krate::Lib, k.clone())].clone(),
                        file: f.rel.clone(),
                        line,
                    });
                }
                // Not the start of a path: `x.y`, `a::b` past its first segment, `pub(crate)`.
                Tok::Ident(_) if after_sep || !next_is_sep => {}
                Tok::Ident(k) if k == "crate" || k == "$crate" => {
                    base = Some((f.krate == Krate::Lib, Vec::new(), i + 2));
                }
                Tok::Ident(k) if k == "starling" => base = Some((true, Vec::new(), i + 2)),
                Tok::Ident(k) if k == "self" => base = Some((f.krate == Krate::Lib, cur, i + 2)),
                Tok::Ident(k) if k == "super" => {
                    let mut p = cur;
                    let mut j = i;
                    while t.get(j).map(|x| &x.0) == Some(&Tok::Ident("super".into()))
                        && t.get(j + 1).map(|x| &x.0) == Some(&Tok::PathSep)
                    {
                        p.pop();
                        j += 2;
                    }
                    base = Some((f.krate == Krate::Lib, p, j));
                }
                Tok::Ident(k) if cur.is_empty() && own_mods.contains(k) => {
                    // A bare path in the crate root: `config::Config`.
                    base = Some((f.krate == Krate::Lib, Vec::new(), i));
                }
                _ => {}
            }
            if let Some((lib, prefix, next)) = base {
                let mut paths = Vec::new();
                let end = parse_tree(t, next, prefix, &mut paths);
                for (segs, l) in paths {
                    let bang = t.get(end).map(|x| &x.0) == Some(&Tok::Punct('!'));
                    if let Some(to) = target(lib, &segs, bang) {
                        if to != from {
                            edges.push(Edge {
                                from: from.clone(),
                                to,
                                file: f.rel.clone(),
                                line: l,
                            });
                        }
                    }
                }
                i = end.max(i + 1);
                continue;
            }
            i += 1;
        }
    }
    // The crate root declares every module: a module that names a root item reaches up.
    if let Some(root) = infos.iter().find(|f| f.rel == "lib.rs") {
        for (p, _, line) in mod_decls(&root.toks) {
            if p.len() == 1 {
                edges.push(Edge {
                    from: "lib".into(),
                    to: p[0].clone(),
                    file: root.rel.clone(),
                    line,
                });
            }
        }
    }
    edges.retain(|e| e.from != e.to);
    (edges, nodes)
}

/// The graph of `edges`, keeping the first example of every edge.
fn graph(edges: &[Edge], nodes: &BTreeSet<String>) -> Graph {
    let mut g: Graph = nodes.iter().map(|n| (n.clone(), BTreeMap::new())).collect();
    for e in edges {
        g.entry(e.to.clone()).or_default();
        g.entry(e.from.clone())
            .or_default()
            .entry(e.to.clone())
            .or_insert_with(|| (e.file.clone(), e.line));
    }
    g
}

/// Tarjan's strongly connected components with more than one node (the cycles), each sorted.
fn cycles(g: &Graph) -> Vec<Vec<String>> {
    struct Tarjan<'a> {
        g: &'a Graph,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    impl<'a> Tarjan<'a> {
        fn visit(&mut self, v: &'a str) {
            let n = self.index.len();
            self.index.insert(v, n);
            self.low.insert(v, n);
            self.stack.push(v);
            self.on_stack.insert(v);
            for w in self.g[v].keys() {
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let lw = self.low[w];
                    let lv = self.low.get_mut(v).unwrap();
                    *lv = (*lv).min(lw);
                } else if self.on_stack.contains(w) {
                    let iw = self.index[w];
                    let lv = self.low.get_mut(v).unwrap();
                    *lv = (*lv).min(iw);
                }
            }
            if self.low[v] == self.index[v] {
                let mut scc = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    scc.push(w.to_string());
                    if w == v {
                        break;
                    }
                }
                if scc.len() > 1 {
                    scc.sort();
                    self.out.push(scc);
                }
            }
        }
    }
    let mut t = Tarjan {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in g.keys() {
        if !t.index.contains_key(v.as_str()) {
            t.visit(v);
        }
    }
    t.out.sort();
    t.out
}

/// A report of every cycle: its modules and, for every edge inside it, one example reference.
fn describe(g: &Graph, sccs: &[Vec<String>]) -> String {
    let mut s = String::new();
    for scc in sccs {
        s += &format!("cycle among {{{}}}:\n", scc.join(", "));
        for from in scc {
            for (to, (file, line)) in &g[from] {
                if scc.contains(to) {
                    s += &format!("  {from} -> {to}  (src/{file}:{line})\n");
                }
            }
        }
    }
    s
}

/// Every `.rs` file under `dir`, as (path relative to `root`, contents), sorted.
fn read_sources(root: &Path, dir: &Path, out: &mut Vec<(String, String)>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            read_sources(root, &p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            let rel = p
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            out.push((rel, std::fs::read_to_string(&p).unwrap()));
        }
    }
}

#[test]
fn top_level_modules_have_no_dependency_cycles() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    read_sources(&src, &src, &mut files);
    assert!(
        files.iter().any(|(rel, _)| rel == "lib.rs"),
        "no src/lib.rs"
    );
    let (edges, nodes) = analyze(&files);
    let g = graph(&edges, &nodes);
    for (from, tos) in &g {
        let tos: Vec<&str> = tos.keys().map(String::as_str).collect();
        println!("{from} -> {}", tos.join(", "));
    }
    // The scanner must see the dependencies that are known to exist, or it checks nothing.
    assert!(
        g["lib"].contains_key("broker"),
        "the scanner found no lib -> broker edge"
    );
    assert!(
        g["broker"].contains_key("codec"),
        "the scanner found no broker -> codec edge"
    );
    let sccs = cycles(&g);
    assert!(
        sccs.is_empty(),
        "module dependency cycles in src/ (imports must point down only):\n{}",
        describe(&g, &sccs)
    );
}

/// Synthetic source sets: the detector must find cycles, and only real ones.
mod self_test {
    use super::*;

    fn set(files: &[(&str, &str)]) -> Vec<(String, String)> {
        files
            .iter()
            .map(|(p, s)| (p.to_string(), s.to_string()))
            .collect()
    }

    fn sccs(files: &[(&str, &str)]) -> (Graph, Vec<Vec<String>>) {
        let (edges, nodes) = analyze(&set(files));
        let g = graph(&edges, &nodes);
        let c = cycles(&g);
        (g, c)
    }

    #[test]
    fn finds_a_two_module_cycle_and_names_the_lines() {
        let (g, c) = sccs(&[
            ("lib.rs", "pub mod a;\npub mod b;\npub mod c;\n"),
            ("a.rs", "//! Uses b.\n\nuse crate::b::B;\npub struct A;\n"),
            ("b/mod.rs", "mod inner;\n"),
            ("b/inner.rs", "use crate::{c as cc, a::{self, A}};\n"),
            ("c.rs", "pub struct C;\n"),
        ]);
        assert_eq!(c, vec![vec!["a".to_string(), "b".to_string()]]);
        assert_eq!(g["a"]["b"], ("a.rs".to_string(), 3));
        assert_eq!(g["b"]["a"], ("b/inner.rs".to_string(), 1));
        assert!(g["b"].contains_key("c"));
        let report = describe(&g, &c);
        assert!(report.contains("a -> b  (src/a.rs:3)"), "{report}");
        assert!(report.contains("b -> a  (src/b/inner.rs:1)"), "{report}");
    }

    #[test]
    fn finds_a_long_cycle_through_super_paths_macros_and_the_root() {
        let (_, c) = sccs(&[
            (
                "lib.rs",
                "pub mod a;\npub mod b;\npub mod c;\npub mod d;\nuse a::A;\n",
            ),
            // super::super from a/x/y.rs climbs to the crate root and names `b`.
            ("a/mod.rs", "pub mod x;\npub struct A;\n"),
            ("a/x/mod.rs", "pub mod y;\n"),
            ("a/x/y.rs", "fn f() { super::super::super::b::g(); }\n"),
            // A bare call of an exported macro is a dependency on its defining module.
            ("b.rs", "pub fn g() { shout!(\"hi\"); }\n"),
            (
                "c.rs",
                "#[macro_export]\nmacro_rules! shout { ($e:expr) => { $crate::d::h($e) } }\n",
            ),
            // A crate-root item: d depends on lib, which declares (and uses) a.
            ("d.rs", "pub fn h(_: &str) { let _ = crate::Root; }\n"),
        ]);
        let want: Vec<String> = ["a", "b", "c", "d", "lib"].map(String::from).to_vec();
        assert_eq!(c, vec![want]);
    }

    #[test]
    fn comments_strings_and_local_paths_are_not_dependencies() {
        let (g, c) = sccs(&[
            ("lib.rs", "pub mod a;\npub mod b;\n"),
            (
                "a.rs",
                "use crate::b::B;\n/// [`crate::a`] links are docs\npub struct A;\n\
                 #[path = \"a_tests.rs\"]\nmod tests;\n",
            ),
            (
                "a_tests.rs",
                "use super::super::a::A; // a::tests -> a, not the root\n",
            ),
            (
                "b.rs",
                "// crate::a in a comment\n/* crate::a /* nested */ crate::a */\n\
                 const S: &str = \"crate::a\";\nconst R: &str = r#\"crate::a\"#;\n\
                 const C: char = '\"'; fn f<'a>(x: &'a str) -> &'a str { x }\n\
                 pub(crate) struct B; mod inner { use super::B; }\n",
            ),
        ]);
        assert!(c.is_empty(), "{}", describe(&g, &c));
        assert!(g["a"].contains_key("b"));
        assert!(g["b"].is_empty(), "{:?}", g["b"]);
        assert!(
            !g.contains_key("a_tests"),
            "#[path] file taken for a module of its own"
        );
    }

    #[test]
    fn binary_modules_name_the_library_through_its_crate_name() {
        let (g, c) = sccs(&[
            ("lib.rs", "pub mod a;\n"),
            ("a.rs", "pub struct A;\n"),
            ("main.rs", "mod cmd;\nfn main() {}\n"),
            ("cmd.rs", "use starling::a::A;\nuse crate::Thing;\n"),
            ("bin/tool/main.rs", "use starling::a::A;\n"),
        ]);
        assert!(c.is_empty());
        assert!(g["cmd"].contains_key("a"));
        assert!(g["cmd"].contains_key("main"));
        assert!(!g["cmd"].contains_key("lib"));
    }

    #[test]
    fn tokens_skip_literals_but_keep_paths() {
        let toks: Vec<Tok> = tokenize("let c = b'x'; $crate::y::z; r#type")
            .into_iter()
            .map(|t| t.0)
            .collect();
        assert!(toks.contains(&Tok::Ident("$crate".into())));
        assert!(toks.contains(&Tok::Ident("type".into())));
        assert!(!toks.contains(&Tok::Ident("x".into())));
    }
}
