//! What a snapshot reads of per-key activity: a key's spend over completed
//! UTC days and its per-model totals, through [`KeyActivity`] (which the
//! activity cache implements, so this floor never imports the collector),
//! and the top-N fold of a company's model mix.

use std::collections::BTreeMap;
use std::fmt::Debug;

use chrono::NaiveDate;

use crate::money::Usd;

/// The figures of one key's activity history that a snapshot publishes.
pub trait KeyActivity: Debug + Send + Sync {
    /// Spend of the last `days` completed UTC days before `today` (`days`: 6,
    /// 29 or [`super::COMPLETED_DAYS`]); `None` unless `hash`'s history was
    /// read for `today`.
    fn completed_usage(&self, hash: &str, today: NaiveDate, days: i64) -> Option<Usd>;

    /// Calls `each` with every model's totals of `hash` over the last
    /// [`super::COMPLETED_DAYS`] completed days before `today`. `false`, and no
    /// call, unless its history was read for `today`.
    fn each_model(
        &self,
        hash: &str,
        today: NaiveDate,
        each: &mut dyn FnMut(&str, ModelTotals),
    ) -> bool;
}

/// One model's figures for one key (provider endpoints and days merged).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ModelTotals {
    pub usage: Usd,
    pub byok_usage: Usd,
    pub requests: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub reasoning_tokens: u64,
}

impl ModelTotals {
    pub fn add(&mut self, other: &ModelTotals) {
        self.usage = self.usage.checked_add(other.usage).unwrap_or(self.usage);
        self.byok_usage = self
            .byok_usage
            .checked_add(other.byok_usage)
            .unwrap_or(self.byok_usage);
        self.requests = self.requests.saturating_add(other.requests);
        self.prompt_tokens = self.prompt_tokens.saturating_add(other.prompt_tokens);
        self.completion_tokens = self
            .completion_tokens
            .saturating_add(other.completion_tokens);
        self.reasoning_tokens = self.reasoning_tokens.saturating_add(other.reasoning_tokens);
    }
}

/// Keeps the `top` models by spend (ties by name) and folds the rest into `other`,
/// so every total over the result equals the total over the input.
pub fn top_models(models: BTreeMap<String, ModelTotals>, top: usize) -> Vec<(String, ModelTotals)> {
    let mut ranked: Vec<(String, ModelTotals)> = models.into_iter().collect();
    ranked.sort_by(|a, b| b.1.usage.cmp(&a.1.usage).then_with(|| a.0.cmp(&b.0)));
    if ranked.len() <= top {
        return ranked;
    }
    let rest = ranked.split_off(top);
    let mut other = ModelTotals::default();
    for (_, totals) in &rest {
        other.add(totals);
    }
    // A real model literally named "other" joins the folded bucket.
    if let Some(pos) = ranked.iter().position(|(m, _)| m == "other") {
        let (_, totals) = ranked.remove(pos);
        other.add(&totals);
    }
    ranked.push(("other".to_string(), other));
    ranked
}

/// A test double: every key's history read for any day, spending nothing,
/// with one model.
#[cfg(test)]
#[derive(Debug)]
pub(crate) struct EveryKeyRead;

#[cfg(test)]
impl KeyActivity for EveryKeyRead {
    fn completed_usage(&self, _: &str, _: NaiveDate, _: i64) -> Option<Usd> {
        Some(Usd::ZERO)
    }

    fn each_model(&self, _: &str, _: NaiveDate, each: &mut dyn FnMut(&str, ModelTotals)) -> bool {
        each("m", ModelTotals::default());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_n_folds_the_rest_into_other_and_keeps_sums() {
        let mut models = BTreeMap::new();
        for (i, name) in ["a", "b", "c", "d", "other"].iter().enumerate() {
            models.insert(
                name.to_string(),
                ModelTotals {
                    usage: Usd::from_f64(i as f64 + 1.0).unwrap(),
                    requests: 1,
                    ..ModelTotals::default()
                },
            );
        }
        let total: i128 = models.values().map(|m| m.usage.nanos()).sum();
        let folded = top_models(models, 2);
        let names: Vec<_> = folded.iter().map(|(m, _)| m.as_str()).collect();
        // "other" (5) and "d" (4) rank first; the real "other" joins the bucket.
        assert_eq!(names, ["d", "other"]);
        assert_eq!(
            folded.iter().map(|(_, m)| m.usage.nanos()).sum::<i128>(),
            total
        );
        assert_eq!(folded.iter().map(|(_, m)| m.requests).sum::<u64>(), 5);
    }
}
