//! The Prometheus text format (0.0.4): HELP/TYPE lines, samples, label
//! escaping. Knows nothing of OpenRouter.

use std::io::{self, Write};

use crate::money::Usd;

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A metric family's fixed header: declared once as a `const`, beside the
/// code that writes its samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Family {
    pub name: &'static str,
    pub kind: Kind,
    pub help: &'static str,
}

/// The `# TYPE` of a family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Gauge,
    Counter,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
        }
    }
}

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

    /// Appends already encoded exposition text.
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

    /// The `# HELP` and `# TYPE` lines of `family`.
    pub fn header(&mut self, family: &Family) -> io::Result<()> {
        self.family(family.name, family.kind.as_str(), family.help)
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
        // The shortest text that parses back to the same number (ryu: the
        // float printing of serde_json; `1.0`, `1e-9` are valid text format).
        self.start_sample(name, labels);
        self.line
            .extend_from_slice(ryu::Buffer::new().format_finite(value).as_bytes());
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

/// Label value escaping per the text format: backslash, double quote and line feed.
pub fn escape_label_value(out: &mut Vec<u8>, value: &str) {
    // Most values (hashes, names) need no escaping: find out with one SIMD scan.
    if memchr::memchr3(b'\\', b'"', b'\n', value.as_bytes()).is_none() {
        out.extend_from_slice(value.as_bytes());
        return;
    }
    for &b in value.as_bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'"' => out.extend_from_slice(b"\\\""),
            b'\n' => out.extend_from_slice(b"\\n"),
            b => out.push(b),
        }
    }
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
    fn floats_print_as_the_shortest_round_trip() {
        let mut w = MetricWriter::new(Vec::new());
        for v in [454.542594979, 0.1 + 0.2, 3.0, -1e-9, 1e21] {
            w.sample_f64("m", &[], v).unwrap();
        }
        let text = String::from_utf8(w.into_inner()).unwrap();
        let values: Vec<f64> = text
            .lines()
            .map(|l| l.trim_start_matches("m ").parse().unwrap())
            .collect();
        assert_eq!(values, [454.542594979, 0.1 + 0.2, 3.0, -1e-9, 1e21]);
        assert!(text.starts_with("m 454.542594979\n"), "{text}");
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
}
