//! Money: US dollars as exact integer nano-dollars.
//!
//! OpenRouter reports amounts with at most 9 decimals, so adding them as
//! integers keeps every company total equal to the sum of its keys to the last
//! reported digit, with no float drift.

/// US dollars as integer nano-dollars: exact sums of what OpenRouter reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Usd(i128);

impl Usd {
    pub const ZERO: Usd = Usd(0);

    /// `None` for NaN or infinities, which have no place in an exposition.
    pub fn from_f64(value: f64) -> Option<Usd> {
        if !value.is_finite() {
            return None;
        }
        let nanos = (value * 1e9).round();
        // i128 holds any finite f64 scaled by 1e9 up to ~1.7e29 dollars.
        if nanos.abs() >= 1e38 {
            return None;
        }
        Some(Usd(nanos as i128))
    }

    pub const fn from_nanos(nanos: i128) -> Usd {
        Usd(nanos)
    }

    pub fn nanos(self) -> i128 {
        self.0
    }

    pub fn checked_add(self, other: Usd) -> Option<Usd> {
        self.0.checked_add(other.0).map(Usd)
    }

    pub fn checked_sub(self, other: Usd) -> Option<Usd> {
        self.0.checked_sub(other.0).map(Usd)
    }
}

impl std::fmt::Display for Usd {
    /// Exact decimal, shortest form: `12.5`, `-0.000000001`, `3`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        let whole = abs / 1_000_000_000;
        let frac = abs % 1_000_000_000;
        if frac == 0 {
            write!(f, "{sign}{whole}")
        } else {
            let digits = format!("{frac:09}");
            write!(f, "{sign}{whole}.{}", digits.trim_end_matches('0'))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usd_formats_exact_decimals() {
        assert_eq!(Usd::from_f64(12.5).unwrap().to_string(), "12.5");
        assert_eq!(Usd::from_f64(3.0).unwrap().to_string(), "3");
        assert_eq!(Usd::from_f64(-0.25).unwrap().to_string(), "-0.25");
        assert_eq!(Usd::from_f64(-1e-9).unwrap().to_string(), "-0.000000001");
        assert_eq!(Usd::from_f64(f64::NAN), None);
        assert_eq!(Usd::from_f64(f64::INFINITY), None);
    }
}
