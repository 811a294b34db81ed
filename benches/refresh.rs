//! Criterion benches of the in-process steps of one refresh at 1k / 10k / 100k keys:
//!
//! - `parse`: JSON of every key page (`{"data":[...]}`, 100 keys each) into one
//!   vector of `ApiKey`s, with the client's decoder (`upstream::parse_keys_page`),
//! - `attribute`: `Snapshot::build` (attribution to companies + exact per-company sums),
//! - `render`: the exposition text of the snapshot (all per-key families),
//! - `gzip`: compressing that text as a refresh does (`body::gzip_all`: zlib-rs;
//!   level 6 up to 8 MiB of text, 2 above, 1 above 128 MiB),
//! - `render_gzip`: render and compress in one pass, as a publish does
//!   (`body::render`), with all families and company-level only.
//!
//! The account is the deterministic one of `examples/fake_openrouter.rs`
//! (`benches/support/account.rs`). Launched by `examples/bench_refresh.rs`
//! (a `[[bench]]` target would break the Docker build, see Cargo.toml):
//!
//! ```text
//! cargo run --release --example bench_refresh                      # everything
//! cargo run --release --example bench_refresh -- 'parse|render/'   # a subset (criterion filter)
//! BENCH_KEYS=1000,10000 cargo run --release --example bench_refresh   # some sizes
//! ```

#[path = "support/account.rs"]
mod account;

use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use openrouter_cost_exporter::body::{self, gzip_all, Published};
use openrouter_cost_exporter::config::{Config, MetricsOptions};
use openrouter_cost_exporter::exposition::{write_snapshot, MetricWriter};
use openrouter_cost_exporter::snapshot::{Extras, Listing, Snapshot};
use openrouter_cost_exporter::upstream::{parse_keys_page, ApiKey, Credits, UpstreamData};

struct Fixture {
    keys: usize,
    pages: Vec<Vec<u8>>,
    config: Config,
    data: Arc<Listing>,
    text: Vec<u8>,
}

fn sizes() -> Vec<usize> {
    std::env::var("BENCH_KEYS")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1_000, 10_000, 100_000])
}

/// The client's own page decoder, every page appended to one listing.
fn parse_pages(pages: &[Vec<u8>]) -> Vec<ApiKey> {
    let mut keys = Vec::new();
    for page in pages {
        keys.extend(parse_keys_page(page).expect("page"));
    }
    keys
}

fn fixture(keys: usize) -> Fixture {
    let spec = account::Spec::with_keys(keys);
    let sim_keys = account::keys(&spec);
    let pages = account::pages(&spec, &sim_keys);
    let yaml = account::config_yaml(&spec, "http://127.0.0.1:1/api/v1", "60s", "");
    let config = Config::parse(&yaml, "bench").expect("bench config");
    let listed = parse_pages(&pages);
    let usage: f64 = listed.iter().filter_map(|k| k.usage).sum();
    let data = Arc::new(Listing::from_upstream(UpstreamData {
        keys: listed,
        credits: Some(Credits {
            total_credits: 1e7,
            total_usage: usage + 1234.5,
        }),
        credits_error: None,
    }));
    let snapshot = Snapshot::build(&config, Arc::clone(&data), &Extras::default(), now());
    let mut w = MetricWriter::new(Vec::new());
    write_snapshot(&mut w, &snapshot, config.metrics).expect("render");
    Fixture {
        keys,
        pages,
        config,
        data,
        text: w.into_inner(),
    }
}

fn now() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 26, 12, 0, 0).unwrap()
}

fn benches(c: &mut Criterion) {
    let fixtures: Vec<Fixture> = sizes().into_iter().map(fixture).collect();
    for f in &fixtures {
        let json: usize = f.pages.iter().map(Vec::len).sum();
        eprintln!(
            "{} keys: {} pages, {} bytes of JSON, {} bytes of text",
            f.keys,
            f.pages.len(),
            json,
            f.text.len()
        );
    }
    let configure =
        |group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
         keys: usize| {
            // Big inputs take long per iteration: fewer samples, bounded time.
            group.sample_size(if keys >= 100_000 { 10 } else { 20 });
            group.measurement_time(Duration::from_secs(if keys >= 100_000 { 20 } else { 5 }));
            group.warm_up_time(Duration::from_secs(1));
        };

    let mut group = c.benchmark_group("parse");
    for f in &fixtures {
        configure(&mut group, f.keys);
        group.throughput(Throughput::Elements(f.keys as u64));
        group.bench_with_input(BenchmarkId::from_parameter(f.keys), f, |b, f| {
            b.iter(|| parse_pages(&f.pages))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("attribute");
    for f in &fixtures {
        configure(&mut group, f.keys);
        group.throughput(Throughput::Elements(f.keys as u64));
        group.bench_with_input(BenchmarkId::from_parameter(f.keys), f, |b, f| {
            b.iter(|| Snapshot::build(&f.config, Arc::clone(&f.data), &Extras::default(), now()))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("render");
    for f in &fixtures {
        configure(&mut group, f.keys);
        group.throughput(Throughput::Elements(f.keys as u64));
        let snapshot = Snapshot::build(&f.config, Arc::clone(&f.data), &Extras::default(), now());
        let mut out = Vec::with_capacity(f.text.len() + 4096);
        group.bench_with_input(BenchmarkId::from_parameter(f.keys), f, |b, f| {
            b.iter(|| {
                out.clear();
                let mut w = MetricWriter::new(&mut out);
                write_snapshot(&mut w, &snapshot, f.config.metrics).expect("render");
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("gzip");
    for f in &fixtures {
        configure(&mut group, f.keys);
        group.throughput(Throughput::Elements(f.keys as u64));
        let gz = gzip_all(&f.text);
        eprintln!(
            "{} keys: gzip {} -> {} bytes ({:.2}x)",
            f.keys,
            f.text.len(),
            gz.len(),
            f.text.len() as f64 / gz.len() as f64
        );
        group.bench_with_input(BenchmarkId::from_parameter(f.keys), f, |b, f| {
            b.iter(|| gzip_all(&f.text))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("render_gzip");
    for f in &fixtures {
        configure(&mut group, f.keys);
        group.throughput(Throughput::Elements(f.keys as u64));
        let snapshot = Snapshot::build(&f.config, Arc::clone(&f.data), &Extras::default(), now());
        for (label, options) in [
            ("all", f.config.metrics),
            (
                "company_only",
                MetricsOptions {
                    per_key: false,
                    ..f.config.metrics
                },
            ),
        ] {
            // Sized (and leveled) by the previous body, as in a steady-state refresh.
            let render = |previous: &Published| {
                body::render(previous, 0, |w| write_snapshot(w, &snapshot, options))
                    .expect("render")
            };
            let previous = render(&Published::default());
            group.bench_with_input(BenchmarkId::new(label, f.keys), f, |b, _| {
                b.iter(|| render(&previous))
            });
        }
    }
    group.finish();
}

criterion_group!(refresh, benches);

/// What `criterion_main!` would generate.
pub fn main() {
    refresh();
    Criterion::default().configure_from_args().final_summary();
}
