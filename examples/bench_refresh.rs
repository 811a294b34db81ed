//! Runs the criterion benches of `benches/refresh.rs` (JSON parse, attribution,
//! render, gzip at 1k / 10k / 100k keys); see that file and BENCHMARKS.md.
//!
//! ```text
//! cargo run --release --example bench_refresh [-- CRITERION-ARGS, e.g. a filter like 'parse|gzip']
//! ```
//!
//! It is an example rather than a `[[bench]]` target because the Dockerfile's
//! dependency layer builds from Cargo.toml, Cargo.lock and src/ alone, and a
//! declared bench whose file is missing there fails the manifest.

#[path = "../benches/refresh.rs"]
mod refresh;

fn main() {
    // `cargo bench` passes --bench; without it criterion only checks each bench once.
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    if !args
        .iter()
        .any(|a| a == "--bench" || a == "--test" || a == "--list")
    {
        let exe = std::env::current_exe().expect("own path");
        let status = std::process::Command::new(exe)
            .arg("--bench")
            .args(&args)
            .status()
            .expect("run the benchmarks");
        std::process::exit(status.code().unwrap_or(1));
    }
    refresh::main();
}
