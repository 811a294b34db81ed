//! The one definition of "running in CI" and of "an external tool is
//! required": every test that needs promtool, prometheus, kubectl, … asks here.
//! Locally a missing tool skips the check with a printed reason; under
//! `CI=true` (or `CI=1`) it fails the test.

use std::net::TcpListener;
use std::path::PathBuf;

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A repository file as text; panics naming the file when unreadable.
pub fn read(rel: &str) -> String {
    let p = root().join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()))
}

/// True under CI (`CI=true`, any case, or `CI=1`).
pub fn is_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// `name` on PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// The first of `names` found on PATH. When none is: a panic under CI naming
/// how to install it, otherwise a printed SKIP reason and `None`.
pub fn require_tool(names: &[&str], install: &str) -> Option<PathBuf> {
    if let Some(p) = names.iter().find_map(|n| which(n)) {
        return Some(p);
    }
    let msg = format!("none of {names:?} is on PATH (install: {install})");
    if is_ci() {
        panic!("required in CI: {msg}");
    }
    eprintln!("SKIP: {msg}");
    None
}

/// A free loopback port (bound then released; only for child processes that
/// must be told their port up front).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}
