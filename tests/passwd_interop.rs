//! Password files are interchangeable with Mosquitto's: a file written by Debian's
//! `mosquitto_passwd` verifies in Starling, and a file written by `starling passwd` is accepted
//! by Mosquitto 2.0 itself (a real `mosquitto` on an ephemeral loopback port, probed with
//! `mosquitto_pub`). Also checks the `starling passwd` command line end to end.
//!
//! The Mosquitto tools come from the `mosquitto` and `mosquitto-clients` Debian packages. When
//! they are missing the interop tests are skipped with a message, unless `STARLING_INTEROP=1`,
//! which makes a missing tool a failure.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use starling::auth::PasswordFile;

#[path = "common/skip.rs"]
mod skip;

fn starling() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_starling"));
    cmd.env_remove("RUST_LOG").stdin(Stdio::null());
    cmd
}

/// A scratch directory unique to this test process and test name.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("starling-passwd-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("run command")
}

fn assert_ok(o: &Output, what: &str) {
    assert!(
        o.status.success(),
        "{what} failed ({}): {}{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// The first existing path among `candidates` (absolute paths, or names looked up in `PATH`).
/// `None` means "skip this test"; with `STARLING_INTEROP=1` a missing tool panics instead.
fn tool(candidates: &[&str]) -> Option<PathBuf> {
    for c in candidates {
        let p = Path::new(c);
        if p.is_absolute() {
            if p.is_file() {
                return Some(p.to_path_buf());
            }
        } else if let Some(paths) = std::env::var_os("PATH") {
            for dir in std::env::split_paths(&paths) {
                let full = dir.join(c);
                if full.is_file() {
                    return Some(full);
                }
            }
        }
    }
    let msg = format!(
        "{} not found (Debian packages mosquitto and mosquitto-clients)",
        candidates.join(" / ")
    );
    skip::skip(&msg);
    None
}

/// Kills and reaps the Mosquitto broker when the test ends, even on panic.
struct Broker {
    child: Child,
    log: PathBuf,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Starts `mosquitto` with `password_file` and `allow_anonymous false` on a free loopback port
/// and waits until it accepts connections.
fn start_mosquitto(mosquitto: &Path, dir: &Path, password_file: &Path) -> (Broker, u16) {
    let port = free_port();
    let conf = dir.join("mosquitto.conf");
    // `user root` keeps a root-run broker from switching to the `mosquitto` user, which could
    // not read our 0600 file; it changes nothing when not run as root.
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {}\n\
             persistence false\nuser root\nlog_dest stderr\n",
            password_file.display()
        ),
    )
    .unwrap();
    let log = dir.join("mosquitto.log");
    let child = Command::new(mosquitto)
        .arg("-c")
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start mosquitto");
    let mut broker = Broker { child, log };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return (broker, port);
        }
        if let Ok(Some(status)) = broker.child.try_wait() {
            panic!(
                "mosquitto exited ({status}): {}",
                std::fs::read_to_string(&broker.log).unwrap_or_default()
            );
        }
        assert!(Instant::now() < deadline, "mosquitto did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether Mosquitto lets `user`/`password` connect and publish.
fn mosquitto_accepts(pub_tool: &Path, port: u16, user: &str, password: &str) -> bool {
    let o = run(Command::new(pub_tool)
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-t",
            "t",
            "-m",
            "m",
        ])
        .args(["-u", user, "-P", password])
        .stdin(Stdio::null()));
    o.status.success()
}

#[test]
fn mosquitto_passwd_file_verifies_in_starling() {
    let Some(mosquitto_passwd) = tool(&["mosquitto_passwd", "/usr/bin/mosquitto_passwd"]) else {
        return;
    };
    let dir = scratch("from-mosquitto");
    let file = dir.join("passwd");
    assert_ok(
        &run(Command::new(&mosquitto_passwd)
            .args(["-c", "-b"])
            .arg(&file)
            .args(["alice", "s3cret:with colon"])),
        "mosquitto_passwd -c -b",
    );
    assert_ok(
        &run(Command::new(&mosquitto_passwd)
            .args(["-b", "-H", "sha512"])
            .arg(&file)
            .args(["bob", "hunter2"])),
        "mosquitto_passwd -b -H sha512",
    );
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("alice:$7$"), "{text}");
    assert!(text.contains("bob:$6$"), "{text}");
    let f = PasswordFile::load(&file).unwrap();
    assert_eq!(f.len(), 2);
    assert!(f.verify("alice", b"s3cret:with colon"));
    assert!(!f.verify("alice", b"s3cret"));
    assert!(f.verify("bob", b"hunter2"));
    assert!(!f.verify("bob", b"hunter"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn starling_passwd_file_is_accepted_by_mosquitto() {
    let Some(mosquitto) = tool(&["/usr/sbin/mosquitto", "mosquitto"]) else {
        return;
    };
    let Some(mosquitto_pub) = tool(&["mosquitto_pub", "/usr/bin/mosquitto_pub"]) else {
        return;
    };
    let dir = scratch("to-mosquitto");
    let file = dir.join("passwd");
    assert_ok(
        &run(starling()
            .args(["passwd", "-c", "-b"])
            .arg(&file)
            .args(["alice", "s3cret:with colon"])),
        "starling passwd -c -b",
    );
    // Mosquitto 2.0's default count and a non-default one written with -I.
    assert_ok(
        &run(starling()
            .args(["passwd", "-b", "-I", "101"])
            .arg(&file)
            .args(["bob", "hunter2"])),
        "starling passwd -b -I 101",
    );
    let (broker, port) = start_mosquitto(&mosquitto, &dir, &file);
    assert!(mosquitto_accepts(
        &mosquitto_pub,
        port,
        "alice",
        "s3cret:with colon"
    ));
    assert!(mosquitto_accepts(&mosquitto_pub, port, "bob", "hunter2"));
    assert!(!mosquitto_accepts(&mosquitto_pub, port, "alice", "s3cret"));
    assert!(!mosquitto_accepts(
        &mosquitto_pub,
        port,
        "bob",
        "s3cret:with colon"
    ));
    assert!(!mosquitto_accepts(&mosquitto_pub, port, "carol", "hunter2"));
    drop(broker);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn starling_passwd_command_line() {
    let dir = scratch("cli");
    let file = dir.join("passwd");

    // Without -c the file must exist.
    let o = run(starling()
        .args(["passwd", "-b"])
        .arg(&file)
        .args(["alice", "pw"]));
    assert_eq!(o.status.code(), Some(1));

    assert_ok(
        &run(starling()
            .args(["passwd", "-c", "-b"])
            .arg(&file)
            .args(["alice", "pw-a"])),
        "create",
    );
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    // mosquitto_passwd's -H: scripts that name the default hash keep working (h11 L6); a
    // hash type Starling does not write is refused by name.
    assert_ok(
        &run(starling()
            .args(["passwd", "-H", "sha512-pbkdf2", "-b"])
            .arg(&file)
            .args(["alice", "pw-a"])),
        "-H sha512-pbkdf2",
    );
    let o = run(starling()
        .args(["passwd", "-H", "sha512", "-b"])
        .arg(&file)
        .args(["alice", "pw-a"]));
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("sha512-pbkdf2"));

    // Without -b and without a terminal the password is the first line of standard input.
    let mut child = starling()
        .arg("passwd")
        .arg(&file)
        .arg("bob")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"pw b with spaces\r\nignored\n")
        .unwrap();
    assert_ok(&child.wait_with_output().unwrap(), "password from stdin");

    // Changing a password keeps the other users and any comment.
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, format!("# managed by hand\n{text}")).unwrap();
    assert_ok(
        &run(starling()
            .args(["passwd", "-b"])
            .arg(&file)
            .args(["alice", "pw-a2"])),
        "change",
    );
    let f = PasswordFile::load(&file).unwrap();
    assert_eq!(f.len(), 2);
    assert!(f.verify("alice", b"pw-a2"));
    assert!(!f.verify("alice", b"pw-a"));
    assert!(f.verify("bob", b"pw b with spaces"));
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        text.starts_with("# managed by hand\nalice:$7$5000$"),
        "{text}"
    );

    // -D deletes; deleting an unknown user fails and leaves the file alone.
    assert_ok(
        &run(starling().args(["passwd", "-D"]).arg(&file).arg("alice")),
        "delete",
    );
    let o = run(starling().args(["passwd", "-D"]).arg(&file).arg("alice"));
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not found"));
    let f = PasswordFile::load(&file).unwrap();
    assert!(!f.contains_user("alice"));
    assert!(f.verify("bob", b"pw b with spaces"));

    // -U converts a plain-text file in place.
    let plain = dir.join("plain");
    std::fs::write(&plain, "# plain\ncarol:pw-c\ndave : pw-d \n").unwrap();
    assert_ok(
        &run(starling().args(["passwd", "-U", "-I", "10"]).arg(&plain)),
        "-U",
    );
    let f = PasswordFile::load(&plain).unwrap();
    assert!(f.verify("carol", b"pw-c"));
    assert!(f.verify("dave", b"pw-d"));
    assert!(std::fs::read_to_string(&plain)
        .unwrap()
        .contains("carol:$7$10$"));

    // Usage errors exit 2; bad usernames exit 1 without touching the file.
    for args in [
        &["passwd", "-c", "-D", "f", "u"][..],
        &["passwd", "-b", "f", "u"],
        &["passwd", "f", "u", "pw"],
        &["passwd", "-U", "f", "u"],
        &["passwd", "-I", "0", "-b", "f", "u", "p"],
        &["passwd", "f"],
    ] {
        let o = run(starling().current_dir(&dir).args(args));
        assert_eq!(o.status.code(), Some(2), "{args:?}");
    }
    let before = std::fs::read(&file).unwrap();
    let o = run(starling()
        .args(["passwd", "-b"])
        .arg(&file)
        .args(["a:b", "pw"]));
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(std::fs::read(&file).unwrap(), before);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Issue 13 item 3: `starling passwd` never writes an entry with an empty password (Mosquitto
/// refuses zero-length passwords at CONNECT, so such a user could never log in): not with `-b`,
/// not from standard input, and not through `-U`, where a plain-text password that starts with
/// a NUL byte is empty as clients' passwords are read. Each fails with a clear message and exit
/// code 1 and leaves the file as it was.
#[test]
fn starling_passwd_refuses_empty_passwords() {
    let dir = scratch("empty");
    let file = dir.join("passwd");
    assert_ok(
        &run(starling()
            .args(["passwd", "-c", "-b"])
            .arg(&file)
            .args(["alice", "pw-a"])),
        "create",
    );
    let before = std::fs::read(&file).unwrap();
    let refused = |o: &Output, what: &str| {
        assert_eq!(o.status.code(), Some(1), "{what}: {o:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("must not be empty") || err.contains("NUL"),
            "{what}: {err}"
        );
    };
    refused(
        &run(starling()
            .args(["passwd", "-b"])
            .arg(&file)
            .args(["bob", ""])),
        "-b with an empty password",
    );
    let mut child = starling()
        .arg("passwd")
        .arg(&file)
        .arg("bob")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"\n").unwrap();
    refused(&child.wait_with_output().unwrap(), "an empty line on stdin");
    assert_eq!(std::fs::read(&file).unwrap(), before);

    let plain = dir.join("plain");
    let text = "carol:pw-c\ndave:\0\n";
    std::fs::write(&plain, text).unwrap();
    let o = run(starling().args(["passwd", "-U", "-I", "10"]).arg(&plain));
    refused(&o, "-U with a password that starts with NUL");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("line 2"),
        "{o:?}"
    );
    assert_eq!(std::fs::read_to_string(&plain).unwrap(), text);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn check_config_loads_auth_files() {
    let dir = scratch("check-config");
    let acl = dir.join("acl");
    std::fs::write(&acl, "topic read a/#\nbogus line\n").unwrap();
    let conf = dir.join("starling.toml");
    std::fs::write(
        &conf,
        format!("[auth]\nacl_file = {:?}\n", acl.display().to_string()),
    )
    .unwrap();
    let o = run(starling().arg("check-config").arg(&conf));
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("auth.acl_file") && err.contains("line 2"),
        "{err}"
    );
    std::fs::write(&acl, "topic read a/#\n").unwrap();
    assert_ok(
        &run(starling().arg("check-config").arg(&conf)),
        "check-config",
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
