//! Escaping and formatting: the HTML-safety and CSV-safety helpers every
//! page goes through, URL path encoding, and money, counts and times in words.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};

use crate::money::Usd;

/// Text safe inside HTML element content and quoted attribute values.
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // Control characters have no business on a page; keep them visible.
            c if c.is_control() && c != '\n' && c != '\t' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// A CSV text field: always quoted (quotes doubled), and a value a
/// spreadsheet could run as a formula gets a leading `'` so it stays text
/// (see [`looks_like_formula`]).
pub fn csv_text(s: &str) -> String {
    let neutral = if looks_like_formula(s) {
        format!("'{s}")
    } else {
        s.to_string()
    };
    format!("\"{}\"", neutral.replace('"', "\"\""))
}

/// What a spreadsheet may skip before it looks for a formula: spaces (ASCII,
/// no-break, ideographic) and quotes.
const FORMULA_LEAD: [char; 5] = [' ', '\u{a0}', '\u{3000}', '"', '\''];
/// What starts a formula or a DDE payload: `=`, `+`, `-`, `@`, tab, carriage
/// return, and the full-width `＝`, `＋`, `－`, `＠`, in case a spreadsheet
/// folds them to ASCII.
const FORMULA_START: [char; 10] = [
    '=', '+', '-', '@', '\t', '\r', '\u{ff1d}', '\u{ff0b}', '\u{ff0d}', '\u{ff20}',
];

/// Whether `s`, after any leading [`FORMULA_LEAD`] characters, starts like a formula.
fn looks_like_formula(s: &str) -> bool {
    s.trim_start_matches(FORMULA_LEAD)
        .starts_with(FORMULA_START)
}

/// Percent-encodes everything but RFC 3986's unreserved characters: safe in
/// a path segment and in a query value.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Decodes `%XX` escapes; `None` for a malformed escape or text that is not UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// US dollars rounded to the cent (half away from zero), with thousands
/// separators: `$1,184.20`, `-$3.05`.
pub fn format_usd(amount: Usd) -> String {
    let nanos = amount.nanos();
    let cents = (nanos.unsigned_abs() + 5_000_000) / 10_000_000;
    let sign = if nanos < 0 && cents > 0 { "-" } else { "" };
    let whole = group_thousands(&(cents / 100).to_string());
    format!("{sign}${whole}.{:02}", cents % 100)
}

pub(super) fn format_f64_usd(value: f64) -> Option<String> {
    Usd::from_f64(value).map(format_usd)
}

/// A duration in words: `42 s`, `5 min`, `3 h 12 min`, `4 d 2 h`.
pub(super) fn format_age(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        0..=119 => format!("{s} s"),
        120..=3599 => format!("{} min", s / 60),
        3600..=86_399 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        _ => format!("{} d {} h", s / 86_400, s % 86_400 / 3600),
    }
}

pub(super) fn format_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

pub(super) fn format_count(n: u64) -> String {
    group_thousands(&n.to_string())
}

/// `1234567` → `1,234,567`.
fn group_thousands(digits: &str) -> String {
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usd(v: f64) -> Usd {
        Usd::from_f64(v).unwrap_or(Usd::ZERO)
    }

    #[test]
    fn money_rounds_to_the_cent_with_separators() {
        assert_eq!(format_usd(usd(1184.2)), "$1,184.20");
        assert_eq!(format_usd(usd(0.004)), "$0.00");
        assert_eq!(format_usd(usd(0.005)), "$0.01");
        assert_eq!(format_usd(usd(-3.049)), "-$3.05");
        assert_eq!(format_usd(usd(-0.001)), "$0.00");
        assert_eq!(format_usd(usd(1234567.891)), "$1,234,567.89");
        assert_eq!(format_usd(usd(100.0)), "$100.00");
    }

    #[test]
    fn escaping() {
        assert_eq!(
            escape_html("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(csv_text("=1+2"), "\"'=1+2\"");
        assert_eq!(csv_text("a \"b\", c"), "\"a \"\"b\"\", c\"");
        assert_eq!(csv_text("-x"), "\"'-x\"");
        assert_eq!(csv_text("plain"), "\"plain\"");
    }

    #[test]
    fn csv_neutralises_every_formula_start() {
        for start in ["=", "+", "-", "@", "\t", "\r"] {
            let value = format!("{start}1+1");
            assert_eq!(csv_text(&value), format!("\"'{value}\""), "{value:?}");
        }
    }

    #[test]
    fn csv_neutralises_a_formula_after_leading_spaces() {
        assert_eq!(csv_text(" =1+1"), "\"' =1+1\"");
        assert_eq!(csv_text("   @SUM(A1)"), "\"'   @SUM(A1)\"");
        assert_eq!(csv_text(" \t-x"), "\"' \t-x\"");
    }

    #[test]
    fn csv_neutralises_a_formula_after_a_no_break_space() {
        assert_eq!(csv_text("\u{a0}=1+1"), "\"'\u{a0}=1+1\"");
        assert_eq!(csv_text(" \u{a0} +1"), "\"' \u{a0} +1\"");
        assert_eq!(csv_text("\u{3000}=1"), "\"'\u{3000}=1\"");
    }

    #[test]
    fn csv_neutralises_a_formula_after_a_quote() {
        // The `"` is doubled inside the quoted field.
        assert_eq!(csv_text("\"=1+1"), "\"'\"\"=1+1\"");
        assert_eq!(csv_text("\" @x"), "\"'\"\" @x\"");
        assert_eq!(csv_text("'=1+1"), "\"''=1+1\"");
    }

    #[test]
    fn csv_neutralises_full_width_formula_starts() {
        for start in ["\u{ff1d}", "\u{ff0b}", "\u{ff0d}", "\u{ff20}"] {
            let value = format!("{start}1+1");
            assert_eq!(csv_text(&value), format!("\"'{value}\""), "{value:?}");
            let spaced = format!(" {start}1");
            assert_eq!(csv_text(&spaced), format!("\"'{spaced}\""), "{spaced:?}");
        }
        assert_eq!(csv_text("＝SUM(A1)"), "\"'＝SUM(A1)\"");
    }

    #[test]
    fn csv_leaves_other_text_as_it_is() {
        assert_eq!(csv_text("  acme"), "\"  acme\"");
        assert_eq!(csv_text("a=b"), "\"a=b\"");
        assert_eq!(csv_text("\"quoted\" name"), "\"\"\"quoted\"\" name\"");
        assert_eq!(csv_text("openai/gpt-4.1"), "\"openai/gpt-4.1\"");
        assert_eq!(csv_text(""), "\"\"");
        assert_eq!(csv_text("   "), "\"   \"");
    }

    #[test]
    fn percent_round_trip() {
        for s in ["acme", "a b/c?d#e%f", "<script>", "Ünïcode & co"] {
            assert_eq!(percent_decode(&percent_encode(s)).as_deref(), Some(s));
        }
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%4"), None);
        assert_eq!(percent_decode("%FF"), None);
    }
}
