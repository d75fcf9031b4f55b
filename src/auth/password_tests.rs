//! Unit tests for [`super`]: vectors from Mosquitto 2.0.11's `mosquitto_passwd` and from
//! Python's `hashlib`, parsing rules and hashing.

use super::*;

/// Written by `mosquitto_passwd -c -b f alice 's3cret:with colon'` (Mosquitto 2.0.11).
const MOSQUITTO_7: &str = "alice:$7$101$HCtCbRFe7t3O+ehn$EU9zhUmXciA+DpGk7HOssBqxAugV1XWiZ+9c8d\
                           LqqwNpWue/A4hvdw6KBx8IvpxL9y0fJ4IOQ6gCAvI/Ahf4nw==";

/// Written by `mosquitto_passwd -c -b -H sha512 f bob hunter2` (Mosquitto 2.0.11).
const MOSQUITTO_6: &str = "bob:$6$BillGEe+uatIJW1k$f2PbpNL3n4EisdYqWz4OaAtn4WwkaewpsfvWQ5i7XGvFY\
                           QpYfppHINl5+rikPqEKSh3F1pbFp3mD0qEeXszEIg==";

/// Salt bytes 1..=12, base64.
const SALT_B64: &str = "AQIDBAUGBwgJCgsM";

/// `hashlib.pbkdf2_hmac('sha512', b"s3cret:with colon", bytes(range(1, 13)), 101, 64)`.
const PY_7_101: &str = "M5pxj6PzIJvUUqoyEfQIE1wBo6jFF28XlVY+NR3v4XBVMPCUpBSVdpoWRYUC+P/aFwYxtd/\
                        wlagAJBd3TDmB8w==";

/// `hashlib.sha512(b"s3cret:with colon" + bytes(range(1, 13)))`.
const PY_6: &str = "nIw/zYzny6SfTsFMwLv9VMQ3ff6+ubodnpYBMD2m69ZrpeGyGdFwJDwU7BRK5oISIhHVsCi5rdDp+\
                    ELJKNm9xg==";

/// `hashlib.pbkdf2_hmac('sha512', b"abc", bytes(range(1, 13)), 101, 64)`.
const PY_ABC_101: &str = "gfP+KaS19EKPig1iDeYf7QjaVkBlnqRaBUeq4iIcjGyTQHd33u5wA+qh68wFb9tXs6pCZ4M\
                          VrQb/5eZ+1UzVKA==";

/// 64-byte salt (bytes 100..164), as Mosquitto 2.1 writes, `b"p"`, 2 iterations.
const PY_SALT64: &str = "ZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXp7fH1+f4CBgoOEhYaHiImKi4yNjo+QkZKTlJWWl5i\
                         ZmpucnZ6foKGiow==";
const PY_SALT64_HASH: &str = "j06HPCIsrGWp1gX81AnsCKJay55PCW8J7hQuk1jOtwRrUHGTch/gTIhDi09s5v2hIpZ\
                              XJ0PjW1q+YZ1DhfIU9w==";

/// `"pässwörd"` (UTF-8), salt 12 × 0xff, 1000 iterations.
const PY_UTF8_1000: &str = "clQgT1kUme3DfrgyI6ekt34C51P0iY7GhepC/upi+RwsFvYANhqyLEbN5cbp6UzpKIujS\
                            8+2sb6ACTr5L+vDXA==";

#[test]
fn mosquitto_written_entries_verify() {
    let f = PasswordFile::parse(&format!("{MOSQUITTO_7}\n{MOSQUITTO_6}\n"));
    assert_eq!(f.len(), 2);
    assert!(f.verify("alice", b"s3cret:with colon"));
    assert!(!f.verify("alice", b"s3cret"));
    assert!(!f.verify("alice", b"s3cret:with colon "));
    assert!(f.verify("bob", b"hunter2"));
    assert!(!f.verify("bob", b"hunter3"));
    assert!(!f.verify("bob", b""));
    assert!(!f.verify("carol", b"hunter2"));
}

#[test]
fn python_vectors_verify() {
    let text = format!(
        "a7:$7$101${SALT_B64}${PY_7_101}\n\
         a6:$6${SALT_B64}${PY_6}\n\
         big:$7$2${PY_SALT64}${PY_SALT64_HASH}\n\
         utf:$7$1000$////////////////${PY_UTF8_1000}\n"
    );
    let f = PasswordFile::parse(&text);
    assert_eq!(f.len(), 4);
    assert!(f.verify("a7", b"s3cret:with colon"));
    assert!(f.verify("a6", b"s3cret:with colon"));
    assert!(f.verify("big", b"p"), "64-byte salt (Mosquitto 2.1)");
    assert!(f.verify("utf", "pässwörd".as_bytes()));
    assert!(!f.verify("a7", b"s3cret:with colon\x01"));
    // Same salt and digest but the other hash type does not verify.
    let swapped = PasswordFile::parse(&format!("x:$6${SALT_B64}${PY_7_101}\n"));
    assert!(!swapped.verify("x", b"s3cret:with colon"));
}

#[test]
fn password_stops_at_nul_like_a_c_string() {
    let f = PasswordFile::parse(&format!("u:$7$101${SALT_B64}${PY_ABC_101}\n"));
    assert!(f.verify("u", b"abc"));
    assert!(f.verify("u", b"abc\0"));
    assert!(f.verify("u", b"abc\0anything"));
    assert!(!f.verify("u", b"ab\0c"));
    assert!(!f.verify("u", b"\0abc"));
}

#[test]
fn comments_blank_and_colonless_lines_are_skipped() {
    let text = format!(
        "# a comment: with colon\n\n   \nno colon here\n{MOSQUITTO_6}\r\n  #notacomment:x\n"
    );
    let f = PasswordFile::parse(&text);
    assert_eq!(f.len(), 1, "{f:?}");
    assert!(f.verify("bob", b"hunter2"), "CRLF is trimmed");
    assert!(!f.contains_user("# a comment"));
}

#[test]
fn fields_are_trimmed_and_extra_colons_ignored() {
    let text = format!("  a7 \t:\t$7$101${SALT_B64}${PY_7_101}  :trailing:stuff\n");
    let f = PasswordFile::parse(&text);
    assert!(f.contains_user("a7"));
    assert!(f.verify("a7", b"s3cret:with colon"));
    assert!(!f.contains_user("  a7 \t"));
}

#[test]
fn bad_entries_are_dropped_and_the_rest_kept() {
    let good = format!("ok:$7$101${SALT_B64}${PY_7_101}");
    let short_salt = "AQIDBAUGBwgJCgs="; // 11 bytes
    let bad = [
        "empty:".to_owned(),
        ":$7$101$x$y".to_owned(),
        "plain:hunter2".to_owned(),
        "t5:$5$abc$def".to_owned(),
        format!("t7x:$7x$101${SALT_B64}${PY_7_101}"),
        format!("zero:$7$0${SALT_B64}${PY_7_101}"),
        format!("neg:$7$-5${SALT_B64}${PY_7_101}"),
        format!("huge:$7$99999999999${SALT_B64}${PY_7_101}"),
        format!("notnum:$7$1e3${SALT_B64}${PY_7_101}"),
        format!("noiter:$7${SALT_B64}${PY_7_101}"),
        format!("shortsalt:$7$101${short_salt}${PY_7_101}"),
        format!("badsalt:$7$101$!!!!${PY_7_101}"),
        format!("shorthash:$7$101${SALT_B64}${SALT_B64}"),
        format!("badhash:$7$101${SALT_B64}$not*base64"),
        format!("extra:$7$101${SALT_B64}${PY_7_101}$more"),
        format!("six3:$6$101${SALT_B64}${PY_6}"),
        "argon:$argon2id$v=19$m=47104,t=1,p=1$c2FsdA$aGFzaA".to_owned(),
    ];
    let text = format!("{}\n{good}\n", bad.join("\n"));
    let f = PasswordFile::parse(&text);
    assert_eq!(f.len(), 1, "{f:?}");
    assert!(f.verify("ok", b"s3cret:with colon"));
    for line in &bad {
        let user = line.split(':').next().unwrap_or("");
        assert!(!f.contains_user(user), "{line}");
    }
}

#[test]
fn hash_errors_are_specific() {
    assert_eq!(parse_hash("hunter2"), Err(HashError::NoDollar));
    assert_eq!(parse_hash("$5$a$b"), Err(HashError::UnknownType));
    assert_eq!(parse_hash("$argon2id$v=19$x$y$z"), Err(HashError::Argon2));
    assert_eq!(parse_hash("$7$0$a$b"), Err(HashError::Iterations));
    assert_eq!(parse_hash("$7$a$b"), Err(HashError::Fields));
    assert_eq!(
        parse_hash(&format!("$7$1$AAAA${PY_6}")),
        Err(HashError::SaltLength(3))
    );
    assert_eq!(
        parse_hash(&format!("$6${SALT_B64}$AAAA")),
        Err(HashError::HashLength(3))
    );
    // Unpadded base64 is refused, as OpenSSL's decoder in Mosquitto expects padding.
    let unpadded = PY_6.trim_end_matches('=');
    assert_eq!(
        parse_hash(&format!("$6${SALT_B64}${unpadded}")),
        Err(HashError::HashBase64)
    );
    // Error text never contains the hash.
    let e = parse_hash(&format!("$6${SALT_B64}$AAAA")).unwrap_err();
    assert!(!e.to_string().contains(SALT_B64));
}

#[test]
fn duplicate_user_last_entry_wins() {
    let text = format!("u:$7$101${SALT_B64}${PY_ABC_101}\nu:$6${SALT_B64}${PY_6}\n");
    let f = PasswordFile::parse(&text);
    assert_eq!(f.len(), 1);
    assert!(f.verify("u", b"s3cret:with colon"));
    assert!(!f.verify("u", b"abc"));
}

#[test]
fn debug_output_hides_hashes() {
    let f = PasswordFile::parse(&format!("{MOSQUITTO_7}\n"));
    let dbg = format!("{f:?}");
    assert!(!dbg.contains("HCtCbRFe"), "{dbg}");
    assert!(!dbg.contains("alice"), "{dbg}");
    let e = parse_hash(&format!("$7$101${SALT_B64}${PY_7_101}")).unwrap();
    assert!(!format!("{e:?}").contains("M5pxj"));
}

#[test]
fn hash_with_salt_matches_python() {
    let salt: Vec<u8> = (1..=12).collect();
    assert_eq!(
        hash_with_salt(b"s3cret:with colon", &salt, 101),
        format!("$7$101${SALT_B64}${PY_7_101}")
    );
}

#[test]
fn hash_password_round_trips_with_fresh_salts() {
    let a = hash_password(b"correct horse", 7).unwrap();
    let b = hash_password(b"correct horse", 7).unwrap();
    assert_ne!(a, b, "salts are random");
    let fields: Vec<&str> = a.split('$').collect();
    assert_eq!(fields[..3], ["", "7", "7"]);
    assert_eq!(fields[3].len(), 16, "12-byte salt is 16 base64 chars");
    assert_eq!(fields[4].len(), 88, "64-byte hash is 88 base64 chars");
    assert!(is_valid_hash(&a));
    let f = PasswordFile::parse(&format!("me:{a}\nyou:{b}\n"));
    assert!(f.verify("me", b"correct horse"));
    assert!(f.verify("you", b"correct horse"));
    assert!(!f.verify("me", b"correct horse battery"));
    assert!(matches!(
        hash_password(b"x", 0),
        Err(HashPasswordError::ZeroIterations)
    ));
    // A NUL ends the password on both sides.
    let h = hash_password(b"abc\0def", 3).unwrap();
    assert!(PasswordFile::parse(&format!("n:{h}\n")).verify("n", b"abc"));
}

#[test]
fn split_line_rules() {
    assert_eq!(split_line("# x:y"), Line::Skip);
    assert_eq!(split_line("nocolon"), Line::Skip);
    assert_eq!(split_line(""), Line::Skip);
    assert_eq!(
        split_line(" u : p : q"),
        Line::Entry {
            username: "u",
            field: "p"
        }
    );
    assert!(matches!(split_line(":p"), Line::Invalid(_)));
    assert!(matches!(split_line("u:"), Line::Invalid(_)));
    assert!(matches!(split_line("u:  :p"), Line::Invalid(_)));
    let long = "u".repeat(MAX_FIELD_LEN + 1);
    assert!(matches!(split_line(&format!("{long}:x")), Line::Invalid(_)));
}

/// Measures PBKDF2-HMAC-SHA512 cost per iteration on this machine, the basis of
/// [`DEFAULT_ITERATIONS`]. Build with optimisations for a meaningful number:
/// `cargo test --release --lib measure_pbkdf2_cost -- --ignored --nocapture`.
#[test]
#[ignore = "measurement, not a check"]
fn measure_pbkdf2_cost() {
    let salt = [7u8; SALT_LEN];
    let iterations = 20_000u32;
    let mut best = std::time::Duration::MAX;
    for _ in 0..5 {
        let start = std::time::Instant::now();
        std::hint::black_box(digest(Kind::Pbkdf2 { iterations }, b"password", &salt));
        best = best.min(start.elapsed());
    }
    let per_iter = best.as_secs_f64() / f64::from(iterations);
    let f = PasswordFile::parse(&format!(
        "u:{}\n",
        hash_password(b"pw", DEFAULT_ITERATIONS).unwrap()
    ));
    let start = std::time::Instant::now();
    assert!(f.verify("u", b"pw"));
    let verify = start.elapsed();
    println!(
        "PBKDF2-HMAC-SHA512: {:.3} us/iteration; verify at DEFAULT_ITERATIONS ({DEFAULT_ITERATIONS}): \
         {:.2} ms; 101: {:.3} ms; 210000: {:.1} ms",
        per_iter * 1e6,
        verify.as_secs_f64() * 1e3,
        per_iter * 101.0 * 1e3,
        per_iter * 210_000.0 * 1e3
    );
}

/// Written by `mosquitto_passwd -c -b f empty ""` (Mosquitto 2.0.11 accepts an empty password).
const MOSQUITTO_EMPTY: &str = "empty:$7$101$NCpTWXcOxTZBnJJn$EcvXD5bbtfQi47Vt7J59k6Y3KD7mKK/AF3UU\
                               kl43s+irzjr/F/XMyJ8ApNRmbO5txhoWs7wO1EVtzn38XZPJJQ==";

/// Issue 13 item 3: an entry that is the hash of the empty string (Mosquitto's own, a `$7$` and
/// a `$6$` one) never verifies, not with an empty password nor with one a NUL makes empty,
/// and loading the file warns naming each such user, and no other.
#[test]
fn empty_password_entries_never_verify_and_are_warned_at_load() {
    let e6 = BASE64.encode(digest(Kind::Sha512, b"", &[3u8; SALT_LEN]));
    let text = format!(
        "{MOSQUITTO_EMPTY}\nempty7:{}\nempty6:$6${}${e6}\nalice:{}\n",
        hash_with_salt(b"", &[2u8; SALT_LEN], 3),
        BASE64.encode([3u8; SALT_LEN]),
        hash_with_salt(b"pw", &[1u8; SALT_LEN], 3),
    );
    let (f, logs) = crate::logging::capture_logs(|| PasswordFile::parse(&text));
    assert_eq!(f.len(), 4);
    for user in ["empty", "empty7", "empty6"] {
        assert!(!f.verify(user, b""), "{user}: empty password accepted");
        assert!(
            !f.verify(user, b"\0junk"),
            "{user}: NUL-emptied password accepted"
        );
        assert!(
            logs.lines().any(|l| l.contains("WARN")
                && l.contains("password is empty")
                && l.contains(&format!("username=\"{user}\""))),
            "no warning naming {user}:\n{logs}"
        );
    }
    assert!(f.verify("alice", b"pw"));
    assert!(
        !logs.contains("alice"),
        "alice's password is not empty:\n{logs}"
    );
}

/// The load-time check stops once its budget is spent and says how many entries it skipped.
#[test]
fn empty_password_check_is_bounded() {
    let text = format!(
        "a:{}\nb:{}\nc:{}\n",
        hash_with_salt(b"", &[1u8; SALT_LEN], 40),
        hash_with_salt(b"", &[2u8; SALT_LEN], 40),
        hash_with_salt(b"x", &[3u8; SALT_LEN], 40),
    );
    let f = PasswordFile::parse(&text);
    assert_eq!(empty_password_users(&f.users, 120), (vec!["a", "b"], 0));
    assert_eq!(empty_password_users(&f.users, 100), (vec!["a", "b"], 1));
    assert_eq!(empty_password_users(&f.users, 39), (vec![], 3));
    let (_, logs) = crate::logging::capture_logs(|| warn_empty_passwords(&f.users, "pw"));
    assert!(
        logs.contains("username=\"a\"") && logs.contains("username=\"b\""),
        "{logs}"
    );
}
