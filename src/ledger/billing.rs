//! What a company is billed: its cost with an optional markup
//! (`companies.<name>.billing.markup_percent`), rounded to the cent.
//!
//! `billed = cost × (1 + N/100)`, computed exactly in integers and rounded
//! once per line to the cent, half to even (banker's rounding: 0.125 → 0.12,
//! 0.135 → 0.14), so that rounding errs neither way over many lines. A total
//! billed is the sum of the rounded lines, as on an invoice. Cost columns are
//! never rounded.

use crate::money::Usd;

/// 100 % in millionths of a percent: the markup's unit.
const HUNDRED_PERCENT: i128 = 100_000_000;
/// Nano-dollars in a cent.
const NANOS_PER_CENT: i128 = 10_000_000;

/// A markup in millionths of a percent: exact for `markup_percent` with up to 6 decimals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Markup {
    micro_percent: i64,
}

impl Markup {
    /// `percent` (e.g. `12.5`); `None` unless finite and from -100 (free)
    /// to 10 000 (a hundredfold).
    pub fn from_percent(percent: f64) -> Option<Markup> {
        if !percent.is_finite() || !(-100.0..=10_000.0).contains(&percent) {
            return None;
        }
        Some(Markup {
            micro_percent: (percent * 1e6).round() as i64,
        })
    }

    /// The markup in percent, for display.
    pub fn percent(self) -> f64 {
        self.micro_percent as f64 / 1e6
    }

    /// `cost × (1 + N/100)` rounded to the cent, half to even; `None` on overflow.
    pub fn billed(self, cost: Usd) -> Option<Usd> {
        let factor = HUNDRED_PERCENT.checked_add(i128::from(self.micro_percent))?;
        let scaled = cost.nanos().checked_mul(factor)?;
        let cents = div_round_half_even(scaled, HUNDRED_PERCENT.checked_mul(NANOS_PER_CENT)?);
        cents.checked_mul(NANOS_PER_CENT).map(Usd::from_nanos)
    }
}

impl std::fmt::Display for Markup {
    /// `12.5 %`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} %", self.percent())
    }
}

/// `n / d` rounded to the nearest integer, ties to even (`d > 0`).
fn div_round_half_even(n: i128, d: i128) -> i128 {
    let q = n.div_euclid(d);
    let r = n.rem_euclid(d);
    match (2 * r).cmp(&d) {
        std::cmp::Ordering::Less => q,
        std::cmp::Ordering::Greater => q + 1,
        std::cmp::Ordering::Equal => q + (q & 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usd(text: &str) -> Usd {
        // Exact decimal text → nanos (test helper; up to 9 decimals).
        let (neg, text) = text.strip_prefix('-').map_or((false, text), |t| (true, t));
        let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
        let nanos = whole.parse::<i128>().unwrap() * 1_000_000_000
            + format!("{frac:0<9}").parse::<i128>().unwrap();
        Usd::from_nanos(if neg { -nanos } else { nanos })
    }

    #[test]
    fn half_to_even_at_the_cent() {
        let none = Markup::from_percent(0.0).unwrap();
        assert_eq!(none.billed(usd("0.125")), Some(usd("0.12")));
        assert_eq!(none.billed(usd("0.135")), Some(usd("0.14")));
        assert_eq!(none.billed(usd("0.125000001")), Some(usd("0.13")));
        assert_eq!(none.billed(usd("0.124999999")), Some(usd("0.12")));
        assert_eq!(none.billed(usd("-0.125")), Some(usd("-0.12")));
        assert_eq!(none.billed(usd("-0.135")), Some(usd("-0.14")));
        assert_eq!(none.billed(usd("2.5")), Some(usd("2.5")));
    }

    #[test]
    fn markup_is_exact_before_rounding() {
        let ten = Markup::from_percent(10.0).unwrap();
        // 1.15 × 1.1 = 1.265 exactly: a tie, to the even cent.
        assert_eq!(ten.billed(usd("1.15")), Some(usd("1.26")));
        // 1.25 × 1.1 = 1.375: a tie, to the even cent.
        assert_eq!(ten.billed(usd("1.25")), Some(usd("1.38")));
        let odd = Markup::from_percent(12.345678).unwrap();
        assert_eq!(odd.billed(usd("100")), Some(usd("112.35")));
        assert_eq!(
            Markup::from_percent(-100.0).unwrap().billed(usd("5")),
            Some(Usd::ZERO)
        );
        assert_eq!(Markup::from_percent(f64::NAN), None);
        assert_eq!(Markup::from_percent(-100.5), None);
        assert_eq!(Markup::from_percent(12.5).unwrap().to_string(), "12.5 %");
    }

    #[test]
    fn huge_costs_do_not_wrap() {
        let ten = Markup::from_percent(10.0).unwrap();
        assert_eq!(ten.billed(Usd::from_nanos(i128::MAX / 2)), None);
    }
}
