//! Prometheus text exposition (format 0.0.4) of a snapshot and of the exporter's status.
//!
//! The snapshot is written once per successful refresh straight into an
//! `io::Write` (a buffer and a gzip stream at once), so a scrape only copies
//! bytes. We write the text format directly rather than through the
//! `prometheus` crate's registry because at 100k keys that model allocates a
//! struct per label pair of over a million series on every refresh.

use std::io::{self, Write};

use chrono::{DateTime, Utc};

use crate::config::MetricsOptions;
use crate::snapshot::{key_byok_usage, key_usage, Snapshot, Usd, Window, ROLLING};
use crate::upstream::ApiKey;

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Writes families and samples with correct escaping; skips non-finite values.
pub struct MetricWriter<W: Write> {
    out: W,
    line: Vec<u8>,
}

impl<W: Write> MetricWriter<W> {
    pub fn new(out: W) -> Self {
        MetricWriter {
            out,
            line: Vec::with_capacity(512),
        }
    }

    pub fn into_inner(self) -> W {
        self.out
    }

    /// Appends already encoded exposition text (the `prometheus` crate's output).
    pub fn raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)
    }

    /// `# HELP` and `# TYPE` lines. Every sample of a family must follow its header.
    pub fn family(&mut self, name: &str, kind: &str, help: &str) -> io::Result<()> {
        self.line.clear();
        self.line.extend_from_slice(b"# HELP ");
        self.line.extend_from_slice(name.as_bytes());
        self.line.push(b' ');
        for c in help.bytes() {
            match c {
                b'\\' => self.line.extend_from_slice(b"\\\\"),
                b'\n' => self.line.extend_from_slice(b"\\n"),
                c => self.line.push(c),
            }
        }
        self.line.extend_from_slice(b"\n# TYPE ");
        self.line.extend_from_slice(name.as_bytes());
        self.line.push(b' ');
        self.line.extend_from_slice(kind.as_bytes());
        self.line.push(b'\n');
        self.out.write_all(&self.line)
    }

    /// A sample with a float value; NaN and infinities are omitted, never exported.
    pub fn sample_f64(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        value: f64,
    ) -> io::Result<()> {
        if !value.is_finite() {
            return Ok(());
        }
        // The shortest text that parses back to the same number, as `{}` prints it.
        self.start_sample(name, labels);
        write_f64(&mut self.line, value);
        self.end_sample()
    }

    pub fn sample_usd(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        value: Usd,
    ) -> io::Result<()> {
        self.sample(name, labels, format_args!("{value}"))
    }

    pub fn sample(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        value: std::fmt::Arguments<'_>,
    ) -> io::Result<()> {
        self.start_sample(name, labels);
        // Writing into a Vec cannot fail.
        let _ = self.line.write_fmt(value);
        self.end_sample()
    }

    /// The sample's name and labels, and the space before its value.
    fn start_sample(&mut self, name: &str, labels: &[(&str, &str)]) {
        self.line.clear();
        self.line.extend_from_slice(name.as_bytes());
        if !labels.is_empty() {
            self.line.push(b'{');
            for (i, (label, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.line.push(b',');
                }
                self.line.extend_from_slice(label.as_bytes());
                self.line.extend_from_slice(b"=\"");
                escape_label_value(&mut self.line, value);
                self.line.push(b'"');
            }
            self.line.push(b'}');
        }
        self.line.push(b' ');
    }

    fn end_sample(&mut self) -> io::Result<()> {
        self.line.push(b'\n');
        self.out.write_all(&self.line)
    }
}

/// Appends a finite `value` exactly as `format!("{value}")` prints it: the
/// shortest decimal that reads back as the same `f64`, never in exponent form.
///
/// Fast path for OpenRouter's amounts (at most 9 decimals, well below 2^22
/// dollars): if `n / 10^9` reads back as `value` for the integer `n` nearest
/// `value * 10^9`, that decimal is the answer. Below 2^22 an ulp is under
/// 10^-9, so no other multiple of 10^-9 reads back as `value`, and a shorter
/// decimal that did would itself be such a multiple. Everything else takes
/// `Display` (the tests compare both on millions of values).
pub fn write_f64(out: &mut Vec<u8>, value: f64) {
    const SCALE: f64 = 1e9;
    if value.abs() < 4_194_304.0 && value != 0.0 {
        let n = (value * SCALE).round();
        if n / SCALE == value {
            let n = n as i64;
            if n < 0 {
                out.push(b'-');
            }
            let n = n.unsigned_abs();
            let (whole, frac) = (n / 1_000_000_000, n % 1_000_000_000);
            write_u64(out, whole);
            if frac != 0 {
                let mut digits = [b'0'; 9];
                let mut f = frac;
                for d in digits.iter_mut().rev() {
                    *d = b'0' + (f % 10) as u8;
                    f /= 10;
                }
                let end = 9 - decimal_trailing_zeros(frac);
                out.push(b'.');
                out.extend_from_slice(&digits[..end]);
            }
            return;
        }
    }
    // Writing into a Vec cannot fail.
    let _ = write!(out, "{value}");
}

fn write_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// Decimal trailing zeros of a non-zero number.
fn decimal_trailing_zeros(mut n: u64) -> usize {
    let mut zeros = 0;
    while n % 10 == 0 {
        n /= 10;
        zeros += 1;
    }
    zeros
}

/// Label value escaping per the text format: backslash, double quote and line feed.
pub fn escape_label_value(out: &mut Vec<u8>, value: &str) {
    let bytes = value.as_bytes();
    // Label values (hashes, names) rarely need escaping: check 8 bytes at a
    // time and copy the value whole. This is the hottest loop of a render.
    if !needs_escape(bytes) {
        out.extend_from_slice(bytes);
        return;
    }
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escaped: &[u8] = match b {
            b'\\' => b"\\\\",
            b'"' => b"\\\"",
            b'\n' => b"\\n",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(escaped);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
}

/// Whether `bytes` holds a backslash, a double quote or a line feed.
fn needs_escape(bytes: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    // Exact "some byte of `word` equals `byte`" test (zero-byte detection).
    let has = |word: u64, byte: u8| {
        let x = word ^ (ONES * u64::from(byte));
        x.wrapping_sub(ONES) & !x & HIGHS != 0
    };
    let mut words = bytes.chunks_exact(8);
    for chunk in &mut words {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let word = u64::from_le_bytes(word);
        if has(word, b'\\') | has(word, b'"') | has(word, b'\n') {
            return true;
        }
    }
    words
        .remainder()
        .iter()
        .any(|&b| matches!(b, b'\\' | b'"' | b'\n'))
}

const CALENDAR_NOTE: &str = "window: daily = current UTC day, weekly = current UTC week from Monday, \
monthly = current UTC month (each to date, dropping to 0 at its UTC boundary); lifetime = since the key was created; \
rolling_7d / rolling_30d (with activity collection) = the last 6 / 29 completed UTC days plus today. \
Refreshed in the background; up to one refresh interval old.";

/// One exported key with its identifying labels.
struct KeyRow<'a> {
    key: &'a ApiKey,
    labels: [(&'static str, &'a str); 3],
    rolling: Option<&'a [Option<f64>; 2]>,
}

/// Renders every OpenRouter family of a snapshot.
pub fn write_snapshot<W: Write>(
    w: &mut MetricWriter<W>,
    snap: &Snapshot,
    options: MetricsOptions,
) -> io::Result<()> {
    // Listed keys, then direct keys that have figures and are not also listed.
    // Made afresh for each family rather than collected: at 100k keys a
    // collected list would be another ~11 MB alive during the render.
    let rows = || {
        let direct = snap
            .direct
            .iter()
            .filter_map(|d| {
                d.key
                    .as_ref()
                    .map(|k| (k, snap.companies[d.company].name.as_str()))
            })
            .filter(|(k, _)| !snap.direct_duplicates.contains(&k.name));
        snap.keys()
            .iter()
            .enumerate()
            .map(|(i, key)| (key, snap.company_of(i), snap.key_rolling.get(i)))
            .chain(direct.map(|(key, company)| (key, company, None)))
            .map(|(key, company, rolling)| KeyRow {
                key,
                labels: [
                    ("key_hash", key.hash.as_str()),
                    ("key", key.name.as_str()),
                    ("company", company),
                ],
                rolling,
            })
    };
    if options.per_key {
        let name = "openrouter_key_usage_usd";
        w.family(
            name,
            "gauge",
            &format!("OpenRouter credit spend of one API key in US dollars; {CALENDAR_NOTE}"),
        )?;
        for row in rows() {
            let [h, k, c] = row.labels;
            for window in Window::ALL {
                if let Some(v) = key_usage(row.key, window) {
                    w.sample_f64(name, &[h, k, c, ("window", window.as_str())], v)?;
                }
            }
            for ((window, _), value) in ROLLING.iter().zip(row.rolling.into_iter().flatten()) {
                if let Some(v) = value {
                    w.sample_f64(name, &[h, k, c, ("window", window)], *v)?;
                }
            }
        }

        if options.per_key_byok {
            let name = "openrouter_key_byok_usage_usd";
            w.family(
                name,
                "gauge",
                &format!(
                    "Bring-your-own-key (external provider) spend of one API key in US dollars, \
                     as estimated by OpenRouter; {CALENDAR_NOTE}"
                ),
            )?;
            for row in rows() {
                let [h, k, c] = row.labels;
                for window in Window::ALL {
                    if let Some(v) = key_byok_usage(row.key, window) {
                        w.sample_f64(name, &[h, k, c, ("window", window.as_str())], v)?;
                    }
                }
            }
        }

        let name = "openrouter_key_limit_usd";
        w.family(
            name,
            "gauge",
            "Credit limit of one API key in US dollars; reset = when the limit restarts \
             (daily/weekly/monthly at the UTC boundary, or never). Absent when the key is unlimited.",
        )?;
        for row in rows() {
            if let Some(limit) = row.key.limit {
                let [h, k, c] = row.labels;
                let reset = match row.key.limit_reset.as_deref() {
                    None | Some("") => "never",
                    Some(other) => other,
                };
                w.sample_f64(name, &[h, k, c, ("reset", reset)], limit)?;
            }
        }

        let name = "openrouter_key_limit_remaining_usd";
        w.family(
            name,
            "gauge",
            "Credit left under the key's limit in the current limit period, in US dollars; \
             negative when overspent (OpenRouter then refuses the key). Absent when unlimited.",
        )?;
        for row in rows() {
            if let Some(remaining) = row.key.limit_remaining {
                w.sample_f64(name, &row.labels, remaining)?;
            }
        }

        let name = "openrouter_key_disabled";
        w.family(
            name,
            "gauge",
            "1 when the API key is disabled, 0 otherwise.",
        )?;
        for row in rows() {
            let v = if row.key.disabled { "1" } else { "0" };
            w.sample(name, &row.labels, format_args!("{v}"))?;
        }

        let name = "openrouter_key_expiry_timestamp_seconds";
        w.family(
            name,
            "gauge",
            "When the API key expires, as a Unix timestamp in seconds. Absent when it never expires.",
        )?;
        for row in rows() {
            if let Some(ts) = row.key.expires_at.as_deref().and_then(parse_timestamp) {
                w.sample(name, &row.labels, format_args!("{ts}"))?;
            }
        }

        let name = "openrouter_key_info";
        w.family(
            name,
            "gauge",
            "Metadata of one API key, always 1: label is OpenRouter's masked key, workspace_id its workspace.",
        )?;
        for row in rows() {
            let [h, k, c] = row.labels;
            let labels = [
                h,
                k,
                c,
                ("label", row.key.label.as_str()),
                (
                    "workspace_id",
                    row.key.workspace_id.as_deref().unwrap_or(""),
                ),
            ];
            w.sample(name, &labels, format_args!("1"))?;
        }
    }

    let name = "openrouter_company_usage_usd";
    w.family(
        name,
        "gauge",
        &format!(
            "OpenRouter credit spend of one company in US dollars: the exact sum over the keys \
             attributed to it. Absent when a key's figure is unknown. {CALENDAR_NOTE}"
        ),
    )?;
    for company in &snap.companies {
        for (i, window) in Window::ALL.into_iter().enumerate() {
            if let Some(v) = company.usage[i] {
                let labels = [
                    ("company", company.name.as_str()),
                    ("window", window.as_str()),
                ];
                w.sample_usd(name, &labels, v)?;
            }
        }
        for ((window, _), value) in ROLLING.iter().zip(company.rolling) {
            if let Some(v) = value {
                w.sample_usd(
                    name,
                    &[("company", company.name.as_str()), ("window", window)],
                    v,
                )?;
            }
        }
    }

    let name = "openrouter_company_byok_usage_usd";
    w.family(
        name,
        "gauge",
        &format!(
            "Bring-your-own-key spend of one company in US dollars, summed over its keys. {CALENDAR_NOTE}"
        ),
    )?;
    for company in &snap.companies {
        for (i, window) in Window::ALL.into_iter().enumerate() {
            if let Some(v) = company.byok_usage[i] {
                let labels = [
                    ("company", company.name.as_str()),
                    ("window", window.as_str()),
                ];
                w.sample_usd(name, &labels, v)?;
            }
        }
    }

    let name = "openrouter_company_budget_usd";
    w.family(
        name,
        "gauge",
        "Budget of one company in US dollars from the exporter config, per UTC calendar window \
         (daily, weekly from Monday, monthly). Absent when not configured.",
    )?;
    for company in &snap.companies {
        let budget = company.budget;
        for (window, value) in [
            (Window::Daily, budget.daily),
            (Window::Weekly, budget.weekly),
            (Window::Monthly, budget.monthly),
        ] {
            if let Some(v) = value {
                let labels = [
                    ("company", company.name.as_str()),
                    ("window", window.as_str()),
                ];
                w.sample_f64(name, &labels, v)?;
            }
        }
    }

    let name = "openrouter_company_keys";
    w.family(
        name,
        "gauge",
        "Number of OpenRouter API keys attributed to the company.",
    )?;
    for company in &snap.companies {
        w.sample(
            name,
            &[("company", company.name.as_str())],
            format_args!("{}", company.keys),
        )?;
    }

    if let Some(credits) = snap.credits {
        let name = "openrouter_account_credits_usd";
        w.family(
            name,
            "gauge",
            "Total credits ever purchased on the OpenRouter account, in US dollars.",
        )?;
        w.sample_f64(name, &[], credits.total_credits)?;
        let name = "openrouter_account_usage_usd";
        w.family(
            name,
            "gauge",
            "Total credits used on the OpenRouter account, all keys, in US dollars (lifetime).",
        )?;
        w.sample_f64(name, &[], credits.total_usage)?;
    }
    if let Some(unattributed) = snap.unattributed_usage {
        let name = "openrouter_account_unattributed_usage_usd";
        w.family(
            name,
            "gauge",
            "Account usage minus the lifetime usage of every listed key, in US dollars: spend of \
             deleted keys and of anything OpenRouter does not list.",
        )?;
        w.sample_usd(name, &[], unattributed)?;
    }

    if options.per_key && !snap.direct.is_empty() {
        let name = "openrouter_key_up";
        w.family(
            name,
            "gauge",
            "Direct-key mode: 1 when the last GET /key with this key's own secret succeeded, 0 when it \
             failed (e.g. 401: revoked); its figures are then the last good ones, or absent.",
        )?;
        for d in snap.direct.iter() {
            // A key that never answered still gets its 0, so the failure is visible.
            let hash = format!("direct:{}", d.name);
            let labels = [
                ("key_hash", hash.as_str()),
                ("key", d.name.as_str()),
                ("company", snap.companies[d.company].name.as_str()),
            ];
            w.sample(name, &labels, format_args!("{}", u8::from(d.up)))?;
        }
    }

    if snap.companies.iter().any(|c| c.models.is_some()) {
        const MIX: &str = "over the last 30 completed UTC days (window=\"rolling_30d\"; today is not broken \
             down by model until it completes); the top models by spend, the rest summed as model=\"other\".";
        // One row per (company, model) with its identifying labels.
        let rows = || {
            snap.companies.iter().flat_map(|c| {
                c.models.iter().flatten().map(move |(model, totals)| {
                    let labels = [
                        ("company", c.name.as_str()),
                        ("model", model.as_str()),
                        ("window", "rolling_30d"),
                    ];
                    (labels, totals)
                })
            })
        };
        let name = "openrouter_company_model_usage_usd";
        w.family(
            name,
            "gauge",
            &format!("Credit spend of one company per model in US dollars, {MIX}"),
        )?;
        for (labels, t) in rows() {
            w.sample_usd(name, &labels, t.usage)?;
        }
        let name = "openrouter_company_model_requests";
        w.family(
            name,
            "gauge",
            &format!("Requests of one company per model, {MIX}"),
        )?;
        for (labels, t) in rows() {
            w.sample(name, &labels, format_args!("{}", t.requests))?;
        }
        let name = "openrouter_company_model_tokens";
        w.family(
            name,
            "gauge",
            &format!(
                "Tokens of one company per model and kind (prompt, completion, reasoning), {MIX}"
            ),
        )?;
        for ([company, model, window], t) in rows() {
            for (kind, v) in [
                ("prompt", t.prompt_tokens),
                ("completion", t.completion_tokens),
                ("reasoning", t.reasoning_tokens),
            ] {
                let labels = [company, model, window, ("kind", kind)];
                w.sample(name, &labels, format_args!("{v}"))?;
            }
        }
    }

    let name = "openrouter_window_end_timestamp_seconds";
    w.family(
        name,
        "gauge",
        "When the UTC calendar window of the published figures resets, as a Unix timestamp in seconds.",
    )?;
    for window in [Window::Daily, Window::Weekly, Window::Monthly] {
        if let Some(end) = window.end(snap.taken_at) {
            w.sample(
                name,
                &[("window", window.as_str())],
                format_args!("{}", end.timestamp()),
            )?;
        }
    }

    let name = "openrouter_config_selector_matches";
    w.family(
        name,
        "gauge",
        "Keys each config selector matched in the last listing; 0 means a typo or a deleted key.",
    )?;
    for m in &snap.selector_matches {
        w.sample(
            name,
            &[
                ("company", m.company.as_str()),
                ("selector", m.selector.as_str()),
            ],
            format_args!("{}", m.matches),
        )?;
    }

    let name = "openrouter_attribution_conflicts";
    w.family(
        name,
        "gauge",
        "Keys claimed by more than one company; each went to the first company in config file order.",
    )?;
    w.sample(name, &[], format_args!("{}", snap.conflicts))?;
    Ok(())
}

/// The exporter's own state, written after the snapshot on every refresh attempt.
#[derive(Debug, Clone, Copy)]
pub struct Status {
    pub up: bool,
    pub last_success: Option<DateTime<Utc>>,
    pub last_duration_seconds: Option<f64>,
    pub refresh_interval_seconds: f64,
    pub reload_successful: bool,
    /// `None` when activity collection is off.
    pub activity: Option<ActivityStatus>,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct ActivityStatus {
    pub up: bool,
    pub last_success: Option<DateTime<Utc>>,
    pub cached_keys: usize,
}

pub fn write_status<W: Write>(w: &mut MetricWriter<W>, status: &Status) -> io::Result<()> {
    let name = "openrouter_up";
    w.family(
        name,
        "gauge",
        "1 when the last refresh from OpenRouter fully succeeded; 0 when it failed and the \
         previous data is still being served.",
    )?;
    w.sample(name, &[], format_args!("{}", u8::from(status.up)))?;

    if let Some(ts) = status.last_success {
        let name = "openrouter_last_refresh_success_timestamp_seconds";
        w.family(
            name,
            "gauge",
            "When the published OpenRouter data was fetched, as a Unix timestamp in seconds.",
        )?;
        let seconds = ts.timestamp_millis() as f64 / 1000.0;
        w.sample_f64(name, &[], seconds)?;
    }
    if let Some(d) = status.last_duration_seconds {
        let name = "openrouter_refresh_duration_seconds";
        w.family(
            name,
            "gauge",
            "Wall time of the last refresh attempt in seconds.",
        )?;
        w.sample_f64(name, &[], d)?;
    }
    let name = "openrouter_refresh_interval_seconds";
    w.family(
        name,
        "gauge",
        "Configured time between refreshes in seconds.",
    )?;
    w.sample_f64(name, &[], status.refresh_interval_seconds)?;

    if let Some(activity) = status.activity {
        let name = "openrouter_activity_up";
        w.family(
            name,
            "gauge",
            "1 when the last activity run (GET /activity per key, for rolling windows and the model mix) \
             fully succeeded; 0 when it failed and the previous activity data is kept.",
        )?;
        w.sample(name, &[], format_args!("{}", u8::from(activity.up)))?;
        if let Some(ts) = activity.last_success {
            let name = "openrouter_activity_last_success_timestamp_seconds";
            w.family(
                name,
                "gauge",
                "When the last activity run succeeded, as a Unix timestamp in seconds.",
            )?;
            w.sample_f64(name, &[], ts.timestamp_millis() as f64 / 1000.0)?;
        }
        let name = "openrouter_activity_cached_keys";
        w.family(name, "gauge", "Keys whose daily activity is cached.")?;
        w.sample(name, &[], format_args!("{}", activity.cached_keys))?;
    }

    let name = "openrouter_config_last_reload_successful";
    w.family(
        name,
        "gauge",
        "1 when the last config (re)load succeeded; 0 when it failed and the previous config is still in use.",
    )?;
    w.sample(
        name,
        &[],
        format_args!("{}", u8::from(status.reload_successful)),
    )?;

    let name = "openrouter_exporter_build_info";
    w.family(name, "gauge", "Build of the running exporter, always 1.")?;
    w.sample(
        name,
        &[("version", env!("CARGO_PKG_VERSION"))],
        format_args!("1"),
    )?;
    Ok(())
}

/// RFC 3339 timestamp (with offset or `Z`, any fraction) to Unix seconds.
pub fn parse_timestamp(text: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(text.trim())
        .ok()
        .map(|t| t.timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        let mut out = Vec::new();
        escape_label_value(&mut out, "a\"b\\c\nd é");
        assert_eq!(String::from_utf8(out).unwrap(), "a\\\"b\\\\c\\nd é");
    }

    #[test]
    fn escaping_finds_special_bytes_at_any_position() {
        for len in 0..40 {
            for pos in 0..len {
                for special in [b'\\', b'"', b'\n'] {
                    let mut text = vec![b'a'; len];
                    text[pos] = special;
                    let text = String::from_utf8(text).unwrap();
                    assert!(needs_escape(text.as_bytes()), "{text:?}");
                    let mut out = Vec::new();
                    escape_label_value(&mut out, &text);
                    let expected = text
                        .replace('\\', "\\\\")
                        .replace('"', "\\\"")
                        .replace('\n', "\\n");
                    assert_eq!(String::from_utf8(out).unwrap(), expected);
                }
            }
            // Bytes next to the specials (and UTF-8) are not mistaken for them.
            let plain: String = "[]#!é€\u{7f}\t".chars().cycle().take(len).collect();
            assert!(!needs_escape(plain.as_bytes()), "{plain:?}");
        }
    }

    #[test]
    fn floats_print_exactly_like_display() {
        let check = |v: f64| {
            if v.is_finite() {
                let mut out = Vec::new();
                write_f64(&mut out, v);
                assert_eq!(String::from_utf8(out).unwrap(), format!("{v}"), "{v:e}");
            }
        };
        for v in [
            0.0,
            -0.0,
            1.0,
            -1.0,
            0.5,
            1e-9,
            -1e-9,
            5e-10,
            1.5e-9,
            0.1 + 0.2,
            3.0,
            12.5,
            454.542594979,
            29.9999982,
            4_194_303.999999999,
            4_194_304.0,
            4_194_304.5,
            1e21,
            1e-7,
            123456789.123,
            f64::MIN_POSITIVE,
            f64::MAX,
            2.5e-324,
        ] {
            check(v);
            check(-v);
        }
        // Amounts as OpenRouter sends them (up to 9 decimals, any magnitude),
        // uniform values, and arbitrary bit patterns.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        // FLOAT_CHECK_ITERATIONS=50000000 cargo test --release --lib floats_print
        let iterations = std::env::var("FLOAT_CHECK_ITERATIONS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(200_000);
        for _ in 0..iterations {
            let r = next();
            let decimals = (r % 10) as usize;
            let whole = next() % 10u64.pow((r >> 8) as u32 % 8);
            let frac = next() % 1_000_000_000;
            let text = format!("{whole}.{frac:09}");
            let v: f64 = text[..text.len() - 9 + decimals].parse().unwrap();
            check(v);
            check(-v);
            check((next() >> 11) as f64 / (1u64 << 53) as f64 * 8_400_000.0 - 4_200_000.0);
            check(f64::from_bits(next()));
        }
    }

    #[test]
    fn non_finite_samples_are_omitted() {
        let mut w = MetricWriter::new(Vec::new());
        w.sample_f64("m", &[], f64::NAN).unwrap();
        w.sample_f64("m", &[], f64::INFINITY).unwrap();
        w.sample_f64("m", &[("a", "b")], 0.5).unwrap();
        assert_eq!(
            String::from_utf8(w.into_inner()).unwrap(),
            "m{a=\"b\"} 0.5\n"
        );
    }

    #[test]
    fn timestamps_parse_leniently() {
        assert_eq!(parse_timestamp("2027-12-31T23:59:59Z"), Some(1830297599));
        assert_eq!(
            parse_timestamp("2025-02-19T20:52:27.363244+00:00"),
            Some(1739998347)
        );
        assert_eq!(parse_timestamp("not a date"), None);
    }
}
