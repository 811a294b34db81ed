//! What each scrape adds to the render-once body: the exporter's counters and
//! process metrics rendered from the `prometheus` registry, and the last gzip
//! block that closes the published member with them.
//!
//! ```text
//! cargo run --release --example bench_fresh_lines
//! ```

use std::time::Instant;

use openrouter_cost_exporter::body::{render, Published};
use openrouter_cost_exporter::telemetry::Telemetry;

fn main() {
    let telemetry = Telemetry::new();
    // About the label sets a busy exporter has: endpoints × status codes.
    for code in 200..220 {
        telemetry.count_request("keys", &code.to_string());
    }
    let calls = 2_000u32;
    let started = Instant::now();
    let mut bytes = 0;
    for _ in 0..calls {
        bytes += telemetry.render().len();
    }
    println!(
        "counters + process metrics: {:?} a scrape ({} bytes)",
        started.elapsed() / calls,
        bytes / calls as usize
    );
    let line = b"openrouter_key_usage_usd{key=\"x\",window=\"daily\"} 1.5\n";
    let body = render(&Published::default(), 0, |w| w.raw(&line.repeat(50_000)))
        .expect("render into memory");
    let tail = telemetry.render();
    let started = Instant::now();
    for _ in 0..calls {
        let [open, close] = body.gzip_with(&tail);
        bytes += open.len() + close.len();
    }
    println!(
        "closing the gzip member with them: {:?} a scrape",
        started.elapsed() / calls
    );
    std::hint::black_box(bytes);
}
