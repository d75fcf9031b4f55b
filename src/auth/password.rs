//! Mosquitto password files (`password_file`, written by `mosquitto_passwd` or `starling
//! passwd`): parsing, verification and hashing.
//!
//! One user per line, `<username>:<hash>`, where the hash is one of
//!
//! ```text
//! $7$<iterations>$<base64 salt>$<base64 hash>   PBKDF2-HMAC-SHA512, 64-byte output (Mosquitto 2.x)
//! $6$<base64 salt>$<base64 hash>                SHA-512(password ‖ salt) (Mosquitto 1.x)
//! ```
//!
//! Base64 is the standard alphabet with padding. The salt is 12 bytes (Mosquitto 2.0), or 64
//! bytes (Mosquitto 2.1, which also reads 12); the hash is always 64 bytes.
//!
//! Parsing follows Mosquitto 2.0 (`pwfile__parse`, `unpwd__decode_passwords`): lines starting
//! with `#` and lines without `:` are skipped; the username is the text before the first `:`
//! and the hash the text up to the next `:`, both trimmed of surrounding blanks. An entry with
//! an unknown hash type (e.g. 2.1's `$argon2id$`), an iteration count below 1, or a salt or hash
//! of the wrong length is dropped with a warning naming the line number, and the rest of the
//! file is still used. Warnings never contain a hash or a password.
//!
//! Verification treats the client's password like a C string, as Mosquitto does: it stops at
//! the first NUL byte. The digest comparison is constant-time ([`subtle`]). A zero-length
//! password never verifies, even against an entry that is the hash of the empty string (which
//! `mosquitto_passwd -b FILE USER ""` writes); such entries draw a warning naming the user at
//! load (see [`EMPTY_CHECK_BUDGET`] for the bound on what that check costs).
//!
//! Cost: every CONNECT with a username runs one PBKDF2 with the entry's iteration count, on the
//! connecting task. See [`DEFAULT_ITERATIONS`] for why Starling writes fewer iterations than
//! Mosquitto 2.1, and run [`PasswordFile::verify`] off the async reactor (e.g. in
//! `spawn_blocking`) when the file may contain expensive entries.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use sha2::{Digest, Sha512};
use subtle::ConstantTimeEq;
use tracing::warn;

/// PBKDF2 iterations Starling writes for new `$7$` entries (`starling passwd` without `-I`).
///
/// The cost of a verification is paid on **every** CONNECT that carries a username, so a
/// reconnect storm after a network blip (thousands of clients at once) multiplies it. Measured
/// on the project's 2-core machine (AMD EPYC, release build, best of 7 runs), one
/// PBKDF2-HMAC-SHA512 iteration costs about 0.48 µs (reproduce with `cargo test --release --lib
/// measure_pbkdf2_cost -- --ignored --nocapture`), so:
///
/// | iterations | one verify | 10 000 CONNECTs on 2 cores |
/// |---|---|---|
/// | 101 (Mosquitto 2.0) | 0.05 ms | 0.25 s |
/// | 5 000 (Starling) | 2.4 ms | 12 s |
/// | 210 000 (Mosquitto 2.1) | 100 ms | 8 min |
///
/// 5 000 keeps a verify around 2.4 ms (inside a 1–5 ms budget, so a storm of 10 000
/// reconnects costs seconds, not minutes) while making each offline guess against a stolen file
/// 50 times dearer than Mosquitto 2.0's 101. Entries with any other count still verify with
/// their own count, and `starling passwd -I` sets it per entry.
pub const DEFAULT_ITERATIONS: u32 = 5_000;

/// Salt length Starling writes (and Mosquitto 2.0 requires).
pub const SALT_LEN: usize = 12;

/// Salt length Mosquitto 2.1 writes; accepted when reading.
pub const SALT_LEN_MOSQUITTO_21: usize = 64;

/// Length of the stored digest for both `$6$` and `$7$`.
pub const HASH_LEN: usize = 64;

/// Longest username or hash Mosquitto accepts on a line.
const MAX_FIELD_LEN: usize = 65_535;

/// Iteration counts above this draw one warning at load: each CONNECT would cost tens of ms.
const EXPENSIVE_ITERATIONS: u32 = 100_000;

/// PBKDF2 iterations (a `$6$` entry counts 1) that loading a file may spend looking for entries
/// whose password is empty: each check is one hash, like a CONNECT. About 0.5 s of one core in
/// a release build: every entry of a file of 200 users at Starling's 5000 iterations, or of
/// 10 000 at Mosquitto 2.0's 101. Entries beyond it are not checked (one warning says how
/// many); they are still refused at CONNECT, since no client can send a non-empty password
/// that matches them.
pub const EMPTY_CHECK_BUDGET: u64 = 1_000_000;

/// How a stored digest was computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `$6$`: SHA-512(password ‖ salt).
    Sha512,
    /// `$7$`: PBKDF2-HMAC-SHA512 with this many iterations.
    Pbkdf2 { iterations: u32 },
}

/// One decoded `$6$`/`$7$` hash.
#[derive(Clone, PartialEq, Eq)]
struct Entry {
    kind: Kind,
    salt: Vec<u8>,
    hash: [u8; HASH_LEN],
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the salt or digest.
        f.debug_struct("Entry")
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl Entry {
    fn digest(&self, password: &[u8]) -> [u8; HASH_LEN] {
        digest(self.kind, password, &self.salt)
    }

    fn verify(&self, password: &[u8]) -> bool {
        let computed = self.digest(c_string(password));
        bool::from(computed.ct_eq(&self.hash))
    }

    /// What checking this entry once costs, in PBKDF2 iterations.
    fn cost(&self) -> u64 {
        match self.kind {
            Kind::Sha512 => 1,
            Kind::Pbkdf2 { iterations } => u64::from(iterations),
        }
    }
}

/// Whether `password` is empty as verification reads it (up to its first NUL byte). Such a
/// password is never accepted.
pub fn is_empty_password(password: &[u8]) -> bool {
    c_string(password).is_empty()
}

/// The users whose entry is the hash of the empty password, sorted, checking entries in
/// username order until `budget` iterations are spent; and how many entries were left
/// unchecked.
fn empty_password_users(users: &HashMap<String, Entry>, budget: u64) -> (Vec<&str>, usize) {
    let mut names: Vec<&String> = users.keys().collect();
    names.sort();
    let mut spent = 0u64;
    let mut empty = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let Some(entry) = users.get(name.as_str()) else {
            continue;
        };
        spent = spent.saturating_add(entry.cost());
        if spent > budget {
            return (empty, names.len() - i);
        }
        if entry.verify(b"") {
            empty.push(name.as_str());
        }
    }
    (empty, 0)
}

/// Warns about every user of `users` whose password is empty (within [`EMPTY_CHECK_BUDGET`]).
fn warn_empty_passwords(users: &HashMap<String, Entry>, origin: &str) {
    let (empty, unchecked) = empty_password_users(users, EMPTY_CHECK_BUDGET);
    for user in empty {
        warn!(
            username = user,
            "{origin}: this user's password is empty, so it can never log in (zero-length \
             passwords are refused); set one with `starling passwd`"
        );
    }
    if unchecked > 0 {
        warn!(
            "{origin}: {unchecked} entries were not checked for an empty password (the check \
             stops after {EMPTY_CHECK_BUDGET} PBKDF2 iterations); any such user is still refused"
        );
    }
}

fn digest(kind: Kind, password: &[u8], salt: &[u8]) -> [u8; HASH_LEN] {
    let mut out = [0u8; HASH_LEN];
    match kind {
        Kind::Sha512 => {
            let mut h = Sha512::new();
            h.update(password);
            h.update(salt);
            out.copy_from_slice(&h.finalize());
        }
        Kind::Pbkdf2 { iterations } => {
            pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, iterations, &mut out);
        }
    }
    out
}

/// The bytes before the first NUL, as `strlen` would see them.
fn c_string(password: &[u8]) -> &[u8] {
    match password.iter().position(|&b| b == 0) {
        Some(n) => &password[..n],
        None => password,
    }
}

/// Why a hash field was rejected. The text never contains the hash itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashError {
    #[error("the hash does not start with `$`")]
    NoDollar,
    #[error("argon2id hashes (Mosquitto 2.1) are not supported; re-create the entry")]
    Argon2,
    #[error("unknown hash type (expected `$6$` or `$7$`)")]
    UnknownType,
    #[error("wrong number of `$`-separated fields")]
    Fields,
    #[error("invalid iteration count (must be an integer from 1 to 4294967295)")]
    Iterations,
    #[error("the salt is not valid base64")]
    SaltBase64,
    #[error("the salt is {0} bytes (expected {SALT_LEN} or {SALT_LEN_MOSQUITTO_21})")]
    SaltLength(usize),
    #[error("the hash is not valid base64")]
    HashBase64,
    #[error("the hash is {0} bytes (expected {HASH_LEN})")]
    HashLength(usize),
}

fn parse_hash(s: &str) -> Result<Entry, HashError> {
    let rest = s.strip_prefix('$').ok_or(HashError::NoDollar)?;
    let fields: Vec<&str> = rest.split('$').collect();
    let (kind, salt_b64, hash_b64) = match fields.as_slice() {
        ["7", iter, salt, hash] => {
            let iterations: u32 = iter
                .parse()
                .ok()
                .filter(|&n| n >= 1)
                .ok_or(HashError::Iterations)?;
            (Kind::Pbkdf2 { iterations }, *salt, *hash)
        }
        ["6", salt, hash] => (Kind::Sha512, *salt, *hash),
        ["6" | "7", ..] => return Err(HashError::Fields),
        ["argon2id", ..] => return Err(HashError::Argon2),
        _ => return Err(HashError::UnknownType),
    };
    let salt = BASE64.decode(salt_b64).map_err(|_| HashError::SaltBase64)?;
    if salt.len() != SALT_LEN && salt.len() != SALT_LEN_MOSQUITTO_21 {
        return Err(HashError::SaltLength(salt.len()));
    }
    let raw = BASE64.decode(hash_b64).map_err(|_| HashError::HashBase64)?;
    let hash: [u8; HASH_LEN] = raw
        .as_slice()
        .try_into()
        .map_err(|_| HashError::HashLength(raw.len()))?;
    Ok(Entry { kind, salt, hash })
}

/// Whether `s` is a hash field this module can verify (`$6$` or `$7$`, well-formed).
pub fn is_valid_hash(s: &str) -> bool {
    parse_hash(s).is_ok()
}

/// What one line of a password file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line<'a> {
    /// A comment, a blank line, or a line without `:`: no entry.
    Skip,
    /// `username:field`, both trimmed. `field` is whatever follows the first `:` up to the next
    /// `:` (a hash in a password file, a password in a plain-text file for `-U`).
    Entry { username: &'a str, field: &'a str },
    /// A line that looks like an entry but has an empty username or field, or an oversized one.
    Invalid(&'static str),
}

/// Splits one line the way Mosquitto's `pwfile__parse` does (see the module docs).
pub fn split_line(line: &str) -> Line<'_> {
    if line.starts_with('#') {
        return Line::Skip;
    }
    let Some((user, rest)) = line.split_once(':') else {
        return Line::Skip;
    };
    let username = user.trim();
    let field = rest.split(':').next().unwrap_or("").trim();
    if username.is_empty() {
        return Line::Invalid("empty username");
    }
    if username.len() > MAX_FIELD_LEN {
        return Line::Invalid("username too long");
    }
    if field.is_empty() {
        return Line::Invalid("missing password hash");
    }
    if field.len() > MAX_FIELD_LEN {
        return Line::Invalid("password hash too long");
    }
    Line::Entry { username, field }
}

/// A parsed password file: usernames and their decoded hashes. `Debug` shows only the number of
/// users.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct PasswordFile {
    users: HashMap<String, Entry>,
}

impl fmt::Debug for PasswordFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PasswordFile")
            .field("users", &self.users.len())
            .finish()
    }
}

impl PasswordFile {
    /// Reads and parses `path`. Only an unreadable file is an error; bad entries are dropped
    /// with a warning that names the file and line. Lines that are not UTF-8 are dropped too.
    pub fn load(path: &Path) -> std::io::Result<PasswordFile> {
        let bytes = std::fs::read(path)?;
        Ok(Self::parse_bytes(&bytes, &path.display().to_string()))
    }

    /// Parses the text of a password file (see [`PasswordFile::load`]).
    pub fn parse(text: &str) -> PasswordFile {
        Self::parse_bytes(text.as_bytes(), "password file")
    }

    fn parse_bytes(bytes: &[u8], origin: &str) -> PasswordFile {
        let mut users = HashMap::new();
        let mut expensive = 0usize;
        for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
            let n = i + 1;
            let Ok(line) = std::str::from_utf8(raw) else {
                warn!("{origin}:{n}: line is not valid UTF-8; entry dropped");
                continue;
            };
            let (username, field) = match split_line(line) {
                Line::Skip => {
                    if !line.starts_with('#') && !line.trim().is_empty() {
                        warn!("{origin}:{n}: line has no `:`; ignored");
                    }
                    continue;
                }
                Line::Invalid(why) => {
                    warn!("{origin}:{n}: {why}; entry dropped");
                    continue;
                }
                Line::Entry { username, field } => (username, field),
            };
            match parse_hash(field) {
                Ok(entry) => {
                    if matches!(entry.kind, Kind::Pbkdf2 { iterations } if iterations > EXPENSIVE_ITERATIONS)
                    {
                        expensive += 1;
                    }
                    if users.insert(username.to_owned(), entry).is_some() {
                        warn!("{origin}:{n}: user is listed again; this later entry is used");
                    }
                }
                Err(e) => warn!("{origin}:{n}: {e}; entry dropped"),
            }
        }
        if expensive > 0 {
            warn!(
                "{origin}: {expensive} entries use more than {EXPENSIVE_ITERATIONS} PBKDF2 \
                 iterations; every CONNECT of those users costs tens of milliseconds of CPU \
                 (re-create them with `starling passwd` to use {DEFAULT_ITERATIONS})"
            );
        }
        warn_empty_passwords(&users, origin);
        PasswordFile { users }
    }

    /// Number of users with a usable entry.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether no user has a usable entry.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Whether `username` has the same entry (hash, salt and kind) here as in `other`: false
    /// when the user was removed or their password changed.
    pub fn same_entry(&self, other: &PasswordFile, username: &str) -> bool {
        match (self.users.get(username), other.users.get(username)) {
            (Some(a), Some(b)) => a == b,
            _ => false,
        }
    }

    /// Whether `username` has a usable entry.
    pub fn contains_user(&self, username: &str) -> bool {
        self.users.contains_key(username)
    }

    /// Whether `password` (up to its first NUL) is `username`'s password. An unknown user costs
    /// the same as a known one (a digest with [`DEFAULT_ITERATIONS`]), so response time does not
    /// reveal which usernames exist. An empty password is refused at once, whoever the user is.
    pub fn verify(&self, username: &str, password: &[u8]) -> bool {
        if is_empty_password(password) {
            return false;
        }
        match self.users.get(username) {
            Some(entry) => entry.verify(password),
            None => {
                let dummy = digest(
                    Kind::Pbkdf2 {
                        iterations: DEFAULT_ITERATIONS,
                    },
                    c_string(password),
                    &[0u8; SALT_LEN],
                );
                std::hint::black_box(dummy);
                false
            }
        }
    }
}

/// Why a password could not be hashed.
#[derive(Debug, thiserror::Error)]
pub enum HashPasswordError {
    #[error("the iteration count must be at least 1")]
    ZeroIterations,
    #[error("the operating system's random number generator failed: {0}")]
    Random(getrandom::Error),
}

/// Hashes `password` (up to its first NUL, as verification sees it) as
/// `$7$<iterations>$<base64 salt>$<base64 hash>` with a fresh random 12-byte salt from the OS
/// CSPRNG, readable by Mosquitto 2.0 and 2.1.
pub fn hash_password(password: &[u8], iterations: u32) -> Result<String, HashPasswordError> {
    if iterations == 0 {
        return Err(HashPasswordError::ZeroIterations);
    }
    let mut salt = [0u8; SALT_LEN];
    getrandom::fill(&mut salt).map_err(HashPasswordError::Random)?;
    Ok(hash_with_salt(password, &salt, iterations))
}

/// PBKDF2-HMAC-SHA512 of `password` up to its first NUL byte (as Mosquitto reads a client's
/// password), 64 bytes: the digest `$7$` entries and Mosquitto's dynamic-security file store.
pub fn pbkdf2_sha512(password: &[u8], salt: &[u8], iterations: u32) -> [u8; HASH_LEN] {
    digest(Kind::Pbkdf2 { iterations }, c_string(password), salt)
}

/// A fresh random salt of [`SALT_LEN`] bytes from the OS CSPRNG.
pub fn random_salt() -> Result<[u8; SALT_LEN], HashPasswordError> {
    let mut salt = [0u8; SALT_LEN];
    getrandom::fill(&mut salt).map_err(HashPasswordError::Random)?;
    Ok(salt)
}

/// [`hash_password`] with a given salt (deterministic; for tests).
fn hash_with_salt(password: &[u8], salt: &[u8], iterations: u32) -> String {
    let hash = digest(Kind::Pbkdf2 { iterations }, c_string(password), salt);
    format!(
        "$7${iterations}${}${}",
        BASE64.encode(salt),
        BASE64.encode(hash)
    )
}

#[cfg(test)]
#[path = "password_tests.rs"]
mod tests;
