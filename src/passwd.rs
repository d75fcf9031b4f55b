//! `starling passwd`: manage a Mosquitto-compatible password file, like `mosquitto_passwd`.
//!
//! ```text
//! starling passwd [-c] [-I N] FILE USER            add or change USER, prompting twice
//! starling passwd [-c] [-I N] -b FILE USER PASSWORD   the same, password on the command line
//! starling passwd -D FILE USER                     delete USER
//! starling passwd [-I N] -U FILE                   hash a plain-text `user:password` file in place
//! ```
//!
//! New entries are `$7$` (PBKDF2-HMAC-SHA512) with a random 12-byte salt and
//! [`DEFAULT_ITERATIONS`] unless `-I` says otherwise, readable by Mosquitto 2.0 and 2.1.
//! Without `-b` the password is read from the terminal without echo (asked twice), or, when
//! standard input is not a terminal, as its first line.
//!
//! Unlike `mosquitto_passwd` 2.0, comment and blank lines are kept, a file with a line that
//! cannot be understood is left untouched, and `-U` leaves entries that are already hashed
//! alone instead of hashing the hash. Every change is written to a temporary file (mode 0600)
//! that is then renamed over the original, so a crash never leaves half a file.

use std::fs::{self, OpenOptions};
use std::io::{BufRead, IsTerminal, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Args;
use starling::auth::password::{
    hash_password, is_valid_hash, split_line, Line, DEFAULT_ITERATIONS,
};

/// The hash types `-H` takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum HashType {
    /// PBKDF2-HMAC-SHA512 (`$7$`), Mosquitto 2.0's default.
    #[value(name = "sha512-pbkdf2")]
    Sha512Pbkdf2,
}

/// Arguments of `starling passwd`.
#[derive(Debug, Args)]
pub struct PasswdArgs {
    /// Create a new password file, replacing any existing one.
    #[arg(short = 'c', conflicts_with_all = ["delete", "upgrade"])]
    create: bool,
    /// Batch mode: take PASSWORD from the command line (it is then visible to other local users
    /// in `ps` and may end up in the shell history).
    #[arg(short = 'b', requires = "password", conflicts_with_all = ["delete", "upgrade"])]
    batch: bool,
    /// Delete USER instead of adding or changing it.
    #[arg(short = 'D', conflicts_with = "upgrade")]
    delete: bool,
    /// Convert a plain-text `user:password` file to hashed passwords, in place. Lines that are
    /// already hashed are kept.
    #[arg(short = 'U', conflicts_with_all = ["user", "password"])]
    upgrade: bool,
    /// PBKDF2 iterations for new hashes. Each CONNECT costs about 0.5 µs per iteration.
    #[arg(
        short = 'I',
        value_name = "ITERATIONS",
        default_value_t = DEFAULT_ITERATIONS,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    iterations: u32,
    /// Hash type, as mosquitto_passwd's -H. Only `sha512-pbkdf2`, Mosquitto 2.0's default, is
    /// written; files holding older `sha512` hashes still verify.
    #[arg(short = 'H', value_name = "HASH", value_enum, default_value_t = HashType::Sha512Pbkdf2)]
    hash: HashType,
    /// The password file.
    file: PathBuf,
    /// The user to add, change or delete.
    #[arg(required_unless_present = "upgrade")]
    user: Option<String>,
    /// The password (with -b only).
    #[arg(requires = "batch")]
    password: Option<String>,
}

/// Runs `starling passwd`.
pub fn run(args: PasswdArgs) -> anyhow::Result<()> {
    let file = &args.file;
    if args.upgrade {
        let text = read(file)?;
        let (out, kept) = upgrade(&text, args.iterations)?;
        if kept > 0 {
            eprintln!(
                "{}: {kept} entries were already hashed and are unchanged",
                file.display()
            );
        }
        return write_atomic(file, &out);
    }
    let Some(user) = args.user.as_deref() else {
        bail!("a username is required");
    };
    check_username(user)?;
    if args.delete {
        let text = read(file)?;
        let Some(out) = delete_user(&text, user) else {
            bail!("user {user} not found in {}", file.display());
        };
        return write_atomic(file, &out);
    }
    let password = match args.password {
        Some(p) => p,
        None => read_password()?,
    };
    check_password(&password)?;
    let hash = match args.hash {
        HashType::Sha512Pbkdf2 => hash_password(password.as_bytes(), args.iterations)?,
    };
    let entry = format!("{user}:{hash}");
    let out = if args.create {
        format!("{entry}\n")
    } else {
        set_user(&read(file)?, user, &entry)
    };
    write_atomic(file, &out)
}

/// The password file's text. Only a missing file suggests `-c`: on a file that exists, `-c`
/// would replace every user in it with the one being added.
fn read(file: &Path) -> anyhow::Result<String> {
    let bytes = match fs::read(file) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "cannot read password file {}: {e} (use -c to create a new one)",
            file.display()
        ),
        Err(e) => bail!("cannot read password file {}: {e}", file.display()),
    };
    String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = valid.iter().filter(|&&b| b == b'\n').count() + 1;
        anyhow::anyhow!(
            "password file {}: line {line} is not valid UTF-8; fix or delete that line \
             (-c would not help: it replaces the whole file, deleting every user in it)",
            file.display()
        )
    })
}

/// Refuses usernames the file format cannot hold, or that would read back differently.
fn check_username(user: &str) -> anyhow::Result<()> {
    if user.is_empty() {
        bail!("the username must not be empty");
    }
    if user.contains(':') {
        bail!("the username must not contain `:`");
    }
    if user.chars().any(char::is_control) {
        bail!("the username must not contain control characters");
    }
    if user.starts_with('#') {
        bail!("the username must not start with `#` (the line would be a comment)");
    }
    if user.trim() != user {
        bail!("the username must not start or end with blanks (they are trimmed when read)");
    }
    if user.len() > 65_535 {
        bail!("the username is longer than 65535 bytes");
    }
    Ok(())
}

pub(crate) fn check_password(password: &str) -> anyhow::Result<()> {
    if password.is_empty() {
        bail!("the password must not be empty (zero-length passwords are refused at CONNECT)");
    }
    if password.contains('\0') {
        bail!("the password must not contain a NUL byte (clients' passwords end at the first one)");
    }
    if password.len() > 65_535 {
        bail!("the password is longer than 65535 bytes");
    }
    Ok(())
}

/// From the terminal, twice and without echo; otherwise the first line of standard input.
pub(crate) fn read_password() -> anyhow::Result<String> {
    if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Password: ").context("cannot read password")?;
        let again =
            rpassword::prompt_password("Reenter password: ").context("cannot read password")?;
        if first != again {
            bail!("passwords do not match");
        }
        return Ok(first);
    }
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("cannot read the password from standard input")?;
    let line = line.strip_suffix('\n').unwrap_or(&line);
    Ok(line.strip_suffix('\r').unwrap_or(line).to_owned())
}

/// The username of an entry line, if it is one.
fn line_user(line: &str) -> Option<&str> {
    match split_line(line.trim_end_matches(['\n', '\r'])) {
        Line::Entry { username, .. } => Some(username),
        _ => None,
    }
}

/// `text` with every line of `user` replaced by `entry`, or `entry` appended when `user` has no
/// line. Every other line is kept as it is.
fn set_user(text: &str, user: &str, entry: &str) -> String {
    let mut out = String::with_capacity(text.len() + entry.len() + 1);
    let mut found = false;
    for line in text.split_inclusive('\n') {
        if line_user(line) == Some(user) {
            if !found {
                out.push_str(entry);
                out.push('\n');
            }
            found = true;
        } else {
            out.push_str(line);
        }
    }
    if !found {
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(entry);
        out.push('\n');
    }
    out
}

/// `text` without the lines of `user`, or `None` when it has none.
fn delete_user(text: &str, user: &str) -> Option<String> {
    let mut found = false;
    let out: String = text
        .split_inclusive('\n')
        .filter(|line| {
            let hit = line_user(line) == Some(user);
            found |= hit;
            !hit
        })
        .collect();
    found.then_some(out)
}

/// Hashes every plain-text `user:password` line (the password being, as for Mosquitto, the text
/// up to the next `:`, trimmed). Returns the new text and the number of lines that were already
/// hashed and kept. Any line that is not a comment, blank or an entry is an error.
fn upgrade(text: &str, iterations: u32) -> anyhow::Result<(String, usize)> {
    let mut out = String::with_capacity(text.len() * 4);
    let mut kept = 0;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let bare = line.trim_end_matches(['\n', '\r']);
        match split_line(bare) {
            Line::Skip if bare.starts_with('#') || bare.trim().is_empty() => out.push_str(line),
            Line::Skip => bail!("line {}: no `:` (expected user:password)", i + 1),
            Line::Invalid(why) => bail!("line {}: {why}", i + 1),
            Line::Entry { field, .. } if is_valid_hash(field) => {
                kept += 1;
                out.push_str(line);
            }
            Line::Entry { username, field } => {
                // A NUL ends a password as clients' passwords are read: "\0..." is empty.
                check_password(field).with_context(|| format!("line {}", i + 1))?;
                let hash = hash_password(field.as_bytes(), iterations)?;
                out.push_str(&format!("{username}:{hash}\n"));
            }
        }
    }
    Ok((out, kept))
}

/// Writes `contents` to a temporary file next to `path` with mode 0600, syncs it and renames it
/// over `path`.
fn write_atomic(path: &Path, contents: &str) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .with_context(|| format!("{} is not a file name", path.display()))?;
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| -> std::io::Result<()> {
        match fs::remove_file(&tmp) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.set_permissions(fs::Permissions::from_mode(0o600))?;
        f.write_all(contents.as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        // Make the rename itself durable; not every file system allows syncing a directory.
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.with_context(|| format!("cannot write password file {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use starling::auth::PasswordFile;

    #[test]
    fn set_user_replaces_or_appends_and_keeps_other_lines() {
        let text = "# users\nalice:$7$old\n\nbob:$7$b\nalice : $6$older\nno colon";
        let out = set_user(text, "alice", "alice:NEW");
        assert_eq!(out, "# users\nalice:NEW\n\nbob:$7$b\nno colon");
        let out = set_user(text, "carol", "carol:C");
        assert_eq!(out, format!("{text}\ncarol:C\n"));
        assert_eq!(set_user("", "u", "u:h"), "u:h\n");
        assert_eq!(set_user("a:x\r\n", "u", "u:h"), "a:x\r\nu:h\n");
        // A comment that looks like the user is not the user.
        assert_eq!(
            set_user("#alice:x\n", "alice", "alice:h"),
            "#alice:x\nalice:h\n"
        );
    }

    #[test]
    fn delete_user_removes_every_line_of_the_user() {
        let text = "# c\nalice:a\nbob:b\n alice :c\n";
        assert_eq!(delete_user(text, "alice").as_deref(), Some("# c\nbob:b\n"));
        assert_eq!(delete_user(text, "carol"), None);
        assert_eq!(delete_user("bob:b", "bob").as_deref(), Some(""));
    }

    #[test]
    fn upgrade_hashes_plain_lines_and_keeps_hashed_ones() {
        let hashed = hash_password(b"already", 3).unwrap();
        let text = format!("# plain file\n\nalice:pw1\n bob : pw2 : ignored\ncarol:{hashed}\n");
        let (out, kept) = upgrade(&text, 3).unwrap();
        assert_eq!(kept, 1);
        assert!(out.starts_with("# plain file\n\nalice:$7$3$"), "{out}");
        assert!(out.contains(&format!("carol:{hashed}\n")));
        let f = PasswordFile::parse(&out);
        assert_eq!(f.len(), 3);
        assert!(f.verify("alice", b"pw1"));
        assert!(f.verify("bob", b"pw2"));
        assert!(f.verify("carol", b"already"));
        // Converting twice changes nothing.
        let (again, kept) = upgrade(&out, 3).unwrap();
        assert_eq!((again.as_str(), kept), (out.as_str(), 3));
        // Lines that cannot be converted refuse the whole file.
        let e = upgrade("a:b\njunk\n", 3).unwrap_err().to_string();
        assert!(e.contains("line 2"), "{e}");
        let e = upgrade("a:\n", 3).unwrap_err().to_string();
        assert!(e.contains("line 1"), "{e}");
    }

    #[test]
    fn usernames_and_passwords_are_checked() {
        check_username("alice").unwrap();
        check_username("with space").unwrap();
        check_username("ünï").unwrap();
        for bad in ["", "a:b", "#a", " a", "a ", "a\nb", "a\0b", "a\tb"] {
            assert!(check_username(bad).is_err(), "{bad:?}");
        }
        check_password("s3cret:with colon").unwrap();
        assert!(check_password("").is_err());
        assert!(check_password("a\0b").is_err());
    }

    #[test]
    fn write_atomic_sets_mode_0600_and_replaces() {
        let dir = std::env::temp_dir().join(format!("starling-passwd-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("pw");
        fs::write(&path, "old").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        write_atomic(&path, "new\n").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "new\n");
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let leftovers: Vec<_> = fs::read_dir(&dir).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file is left behind");
        assert!(write_atomic(&dir.join("missing-dir").join("pw"), "x").is_err());
        fs::remove_dir_all(&dir).unwrap();
    }
}
