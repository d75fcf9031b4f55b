//! Reading a Mosquitto configuration: one [`Line`] per option, in the order Mosquitto applies
//! them, with `include_dir` directories read where they appear (their `*.conf` files in sorted
//! order, as Mosquitto 2.x does).

use std::path::{Path, PathBuf};

use anyhow::Context;

/// Directories nested deeper than this through `include_dir` are refused (a loop).
const MAX_INCLUDE_DEPTH: usize = 8;

/// One option line of a Mosquitto configuration file.
#[derive(Debug, Clone)]
pub struct Line {
    /// The file it was read from.
    pub file: PathBuf,
    /// Its line number, from 1.
    pub number: usize,
    /// The option name (the first word).
    pub key: String,
    /// Everything after the option name, trimmed.
    pub rest: String,
}

impl Line {
    /// Where the line is, `file:line`.
    pub fn at(&self) -> String {
        format!("{}:{}", self.file.display(), self.number)
    }

    /// The words after the option name.
    pub fn args(&self) -> Vec<&str> {
        self.rest.split_whitespace().collect()
    }
}

/// A whole configuration: its option lines, and every file read.
#[derive(Debug, Default)]
pub struct Source {
    /// The option lines, includes expanded in place.
    pub lines: Vec<Line>,
    /// The files read, the main one first.
    pub files: Vec<PathBuf>,
}

/// Reads `path` and the files its `include_dir` lines name.
pub fn read(path: &Path) -> anyhow::Result<Source> {
    let mut source = Source::default();
    read_file(path, 0, &mut source)?;
    Ok(source)
}

fn read_file(path: &Path, depth: usize, source: &mut Source) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    source.files.push(path.to_owned());
    for (i, raw) in text.lines().enumerate() {
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let (key, rest) = trimmed
            .split_once(char::is_whitespace)
            .unwrap_or((trimmed, ""));
        let line = Line {
            file: path.to_owned(),
            number: i + 1,
            key: key.to_owned(),
            rest: rest.trim().to_owned(),
        };
        if line.key == "include_dir" {
            if depth >= MAX_INCLUDE_DEPTH {
                anyhow::bail!("{}: include_dir nested too deeply (a loop?)", line.at());
            }
            for file in conf_files(Path::new(&line.rest))
                .with_context(|| format!("{}: include_dir", line.at()))?
            {
                read_file(&file, depth + 1, source)?;
            }
            continue;
        }
        source.lines.push(line);
    }
    Ok(())
}

/// The `*.conf` files of `dir`, sorted by name.
fn conf_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "conf") && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}
