//! Which company owns which key.
//!
//! Precedence: a `hash` selector beats an exact `name`, which beats a
//! `workspace` (its id or slug), which beats a `creator` (an exact email, then
//! an `@domain`), which beats a `name_glob`. Exact names, hashes, workspaces
//! and creators are unique across companies (the config validator enforces
//! it); globs of several companies may match one key, and then the first
//! company in file order wins. A key claimed by more than one company counts
//! as a conflict. A key whose creator is unknown (the member list could not be
//! read, or the member left) is matched by the other kinds only, never guessed.
//! A key no selector matches goes to the unassigned company, so every listed
//! key lands in exactly one company. While a list that selectors look keys
//! up in has never been read, [`waiting_for`] names the companies whose keys
//! are therefore not known.

// hashbrown with foldhash: each key is looked up several times per refresh.
use hashbrown::HashMap;

use crate::config::{is_uuid, Config, Selector};

/// Selectors compiled for fast matching. Company indexes follow the config;
/// index `companies.len()` is the unassigned company.
#[derive(Debug)]
pub struct Attributor {
    by_hash: HashMap<String, (usize, usize)>,
    by_name: HashMap<String, (usize, usize)>,
    /// Workspace UUIDs (lowercased) and slugs.
    by_workspace: HashMap<String, (usize, usize)>,
    /// Creator emails (lowercased).
    by_creator: HashMap<String, (usize, usize)>,
    /// Creator domains (lowercased, without the `@`).
    by_creator_domain: HashMap<String, (usize, usize)>,
    globs: Vec<(glob::Pattern, usize, usize)>,
    /// Globs by their literal prefix (the text before the first `*`, `?` or
    /// `[`): a name can only match a glob whose prefix it starts with, so each
    /// key tests a handful of globs instead of all of them (100k keys × 1000
    /// company globs would be 10^8 matches per refresh).
    glob_prefixes: GlobPrefixes,
    selector_counts: Vec<usize>,
}

/// Indexes of `Attributor::globs`, grouped by literal prefix.
#[derive(Debug, Default)]
struct GlobPrefixes {
    by_prefix: HashMap<Box<[u8]>, Vec<usize>>,
    /// Distinct prefix lengths in `by_prefix`, ascending (0 = globs that start with a wildcard).
    lengths: Vec<usize>,
}

impl GlobPrefixes {
    fn new(patterns: &[&str]) -> GlobPrefixes {
        let mut index = GlobPrefixes::default();
        for (i, pattern) in patterns.iter().enumerate() {
            // `glob::Pattern` treats every character but `*`, `?` and `[` as
            // itself (case-sensitively, by default options), so this prefix
            // must appear literally at the start of any matching name.
            let end = pattern.find(['*', '?', '[']).unwrap_or(pattern.len());
            let prefix = pattern.as_bytes()[..end].into();
            index
                .by_prefix
                .entry(prefix)
                .or_insert_with(Vec::new)
                .push(i);
            if !index.lengths.contains(&end) {
                index.lengths.push(end);
            }
        }
        index.lengths.sort_unstable();
        index
    }

    /// Indexes of the globs that may match `name`, ascending (config order).
    fn candidates(&self, name: &str, out: &mut Vec<usize>) {
        out.clear();
        let name = name.as_bytes();
        for &len in &self.lengths {
            let Some(head) = name.get(..len) else { break };
            if let Some(globs) = self.by_prefix.get(head) {
                out.extend_from_slice(globs);
            }
        }
        out.sort_unstable();
    }
}

/// What attribution looks at in one key. `From<(&str, &str)>` gives a key
/// known by hash and name only.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyIdentity<'a> {
    pub hash: &'a str,
    pub name: &'a str,
    /// The workspace UUID the key was listed under, if reported.
    pub workspace_id: Option<&'a str>,
    /// Its workspace's slug, when known (`default` for the default workspace).
    pub workspace_slug: Option<&'a str>,
    /// The email of the member who created it, when known.
    pub creator_email: Option<&'a str>,
}

impl<'a> From<(&'a str, &'a str)> for KeyIdentity<'a> {
    fn from((hash, name): (&'a str, &'a str)) -> KeyIdentity<'a> {
        KeyIdentity {
            hash,
            name,
            ..KeyIdentity::default()
        }
    }
}

/// The result of attributing one listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribution {
    /// For each key, in listing order, the index of its company.
    pub company_of_key: Vec<usize>,
    /// For each company, how many keys each of its selectors matched (file order).
    pub selector_matches: Vec<Vec<u64>>,
    /// Keys claimed by more than one company.
    pub conflicts: u64,
}

impl Attributor {
    pub fn new(config: &Config) -> Attributor {
        let mut by_hash = HashMap::new();
        let mut by_name = HashMap::new();
        let mut by_workspace = HashMap::new();
        let mut by_creator = HashMap::new();
        let mut by_creator_domain = HashMap::new();
        let mut globs = Vec::new();
        for (c, company) in config.companies.iter().enumerate() {
            for (s, selector) in company.selectors.iter().enumerate() {
                match selector {
                    Selector::Hash(h) => {
                        by_hash.entry(h.to_ascii_lowercase()).or_insert((c, s));
                    }
                    Selector::Name(n) => {
                        by_name.entry(n.clone()).or_insert((c, s));
                    }
                    Selector::Workspace(w) => {
                        by_workspace.entry(w.clone()).or_insert((c, s));
                    }
                    Selector::Creator(creator) => match creator.strip_prefix('@') {
                        Some(domain) => {
                            by_creator_domain
                                .entry(domain.to_ascii_lowercase())
                                .or_insert((c, s));
                        }
                        None => {
                            by_creator.entry(creator.to_lowercase()).or_insert((c, s));
                        }
                    },
                    // Polled with its own secret, never matched against the listing.
                    Selector::Direct { .. } => {}
                    Selector::NameGlob(g) => {
                        // The validator rejected invalid patterns; skip defensively.
                        if let Ok(pattern) = glob::Pattern::new(g) {
                            globs.push((pattern, c, s));
                        }
                    }
                }
            }
        }
        let patterns: Vec<&str> = globs.iter().map(|(p, _, _)| p.as_str()).collect();
        let glob_prefixes = GlobPrefixes::new(&patterns);
        Attributor {
            by_hash,
            by_name,
            by_workspace,
            by_creator,
            by_creator_domain,
            globs,
            glob_prefixes,
            selector_counts: config.companies.iter().map(|c| c.selectors.len()).collect(),
        }
    }

    pub fn unassigned_index(&self) -> usize {
        self.selector_counts.len()
    }

    /// Attributes keys (a [`KeyIdentity`], or a `(hash, name)` pair), in order.
    pub fn attribute<'a, K: Into<KeyIdentity<'a>>>(
        &self,
        keys: impl ExactSizeIterator<Item = K>,
    ) -> Attribution {
        let mut selector_matches: Vec<Vec<u64>> =
            self.selector_counts.iter().map(|&n| vec![0; n]).collect();
        let mut company_of_key = Vec::with_capacity(keys.len());
        let mut conflicts = 0;
        let mut claimants: Vec<usize> = Vec::with_capacity(4);
        let mut candidates: Vec<usize> = Vec::with_capacity(8);
        for key in keys {
            let key: KeyIdentity<'a> = key.into();
            let (hash, name) = (key.hash, key.name);
            claimants.clear();
            let by_hash = if hash.bytes().any(|b| b.is_ascii_uppercase()) {
                self.by_hash.get(&hash.to_ascii_lowercase())
            } else {
                self.by_hash.get(hash)
            };
            let hash_owner = by_hash.map(|&(c, s)| {
                selector_matches[c][s] += 1;
                c
            });
            let name_owner = self.by_name.get(name).map(|&(c, s)| {
                selector_matches[c][s] += 1;
                c
            });
            let workspace_owner = self.workspace_owner(&key, &mut selector_matches, &mut claimants);
            let creator_owner = self.creator_owner(&key, &mut selector_matches, &mut claimants);
            let glob_owner =
                self.glob_owner(name, &mut candidates, &mut selector_matches, &mut claimants);
            claimants.extend(hash_owner);
            claimants.extend(name_owner);
            claimants.sort_unstable();
            claimants.dedup();
            if claimants.len() > 1 {
                conflicts += 1;
            }
            company_of_key.push(
                hash_owner
                    .or(name_owner)
                    .or(workspace_owner)
                    .or(creator_owner)
                    .or(glob_owner)
                    .unwrap_or(self.unassigned_index()),
            );
        }
        Attribution {
            company_of_key,
            selector_matches,
            conflicts,
        }
    }

    /// The company the key's workspace (by id or by slug) names; each match
    /// is counted and claims the key. A workspace named by id and by slug
    /// (in two companies) claims twice.
    fn workspace_owner(
        &self,
        key: &KeyIdentity<'_>,
        matches: &mut [Vec<u64>],
        claimants: &mut Vec<usize>,
    ) -> Option<usize> {
        let mut owner = None;
        let workspace_keys = [
            key.workspace_id.map(str::to_ascii_lowercase),
            key.workspace_slug.map(str::to_string),
        ];
        for w in workspace_keys.iter().flatten() {
            if let Some(&(c, s)) = self.by_workspace.get(w.as_str()) {
                matches[c][s] += 1;
                owner.get_or_insert(c);
                claimants.push(c);
            }
        }
        owner
    }

    /// The company the key's creator (by email, then by domain) names.
    fn creator_owner(
        &self,
        key: &KeyIdentity<'_>,
        matches: &mut [Vec<u64>],
        claimants: &mut Vec<usize>,
    ) -> Option<usize> {
        let email = key.creator_email.map(str::to_lowercase)?;
        let mut owner = None;
        let domain = email.rsplit_once('@').map_or("", |(_, d)| d);
        let found = [
            self.by_creator.get(&email),
            self.by_creator_domain.get(domain),
        ];
        for &(c, s) in found.into_iter().flatten() {
            matches[c][s] += 1;
            owner.get_or_insert(c);
            claimants.push(c);
        }
        owner
    }

    /// The first company whose name glob matches the key's name.
    fn glob_owner(
        &self,
        name: &str,
        candidates: &mut Vec<usize>,
        matches: &mut [Vec<u64>],
        claimants: &mut Vec<usize>,
    ) -> Option<usize> {
        let mut owner = None;
        self.glob_prefixes.candidates(name, candidates);
        for &g in candidates.iter() {
            let (pattern, c, s) = &self.globs[g];
            if pattern.matches(name) {
                matches[*c][*s] += 1;
                owner.get_or_insert(*c);
                claimants.push(*c);
            }
        }
        owner
    }
}

/// An organization list that attribution looks keys up in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// Workspace slugs, for `workspace:` selectors that name a slug.
    WorkspaceSlugs,
    /// Member emails, for `creator:` selectors.
    MemberEmails,
}

/// For each company (config order, then the unassigned company), the list
/// whose first read decides which keys are its; `None` when its keys are
/// known. While a list has never been read, the keys its selectors would
/// claim fall through to lower precedence: so neither a company with such a
/// selector knows its keys, nor one that may receive them (a `creator:` or
/// `name_glob` selector, ranked lower, and the unassigned company).
pub fn waiting_for(
    config: &Config,
    workspaces_read: bool,
    members_read: bool,
) -> Vec<Option<Lookup>> {
    let kinds: Vec<(bool, bool, bool)> = config
        .companies
        .iter()
        .map(|c| {
            let has = |f: fn(&Selector) -> bool| c.selectors.iter().any(f);
            (
                has(|s| matches!(s, Selector::Workspace(w) if !is_uuid(w))),
                has(|s| matches!(s, Selector::Creator(_))),
                has(|s| matches!(s, Selector::NameGlob(_))),
            )
        })
        .collect();
    let slugs_unknown = !workspaces_read && kinds.iter().any(|k| k.0);
    let members_unknown = !members_read && kinds.iter().any(|k| k.1);
    let wait = |slug: bool, creator: bool, glob: bool| {
        if members_unknown && (creator || glob) {
            Some(Lookup::MemberEmails)
        } else if slugs_unknown && (slug || creator || glob) {
            Some(Lookup::WorkspaceSlugs)
        } else {
            None
        }
    };
    kinds
        .iter()
        .map(|&(slug, creator, glob)| wait(slug, creator, glob))
        .chain(std::iter::once(wait(true, true, true)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key<'a>(hash: &'a str, name: &'a str) -> (&'a str, &'a str) {
        (hash, name)
    }

    fn config(yaml: &str) -> Config {
        Config::parse(yaml, "test").unwrap()
    }

    #[test]
    fn hash_beats_name_beats_glob_and_rest_is_unassigned() {
        let cfg = config(
            "companies:\n  globby:\n    keys: [{name_glob: 'acme-*'}]\n  named:\n    keys: [acme-prod]\n  hashed:\n    keys: [{hash: AAA}]\n",
        );
        let a = Attributor::new(&cfg);
        let keys = [
            key("aaa", "acme-prod"),  // hash wins over name and glob
            key("bbb", "acme-prod"),  // name wins over glob
            key("ccc", "acme-other"), // glob
            key("ddd", "stranger"),   // nobody
        ];
        let result = a.attribute(keys.iter().copied());
        assert_eq!(result.company_of_key, vec![2, 1, 0, 3]);
        // Keys 0 and 1 were claimed by more than one company.
        assert_eq!(result.conflicts, 2);
        assert_eq!(result.selector_matches, vec![vec![3], vec![2], vec![1]]);
    }

    #[test]
    fn two_globs_go_to_first_company_in_file_order() {
        let cfg = config(
            "companies:\n  first:\n    keys: [{name_glob: '*-prod'}]\n  second:\n    keys: [{name_glob: 'acme-*'}]\n",
        );
        let result = Attributor::new(&cfg).attribute([key("h", "acme-prod")].into_iter());
        assert_eq!(result.company_of_key, vec![0]);
        assert_eq!(result.conflicts, 1);
    }

    #[test]
    fn two_globs_of_one_company_are_no_conflict() {
        let cfg = config("companies:\n  a:\n    keys: [{name_glob: 'x*'}, {name_glob: '*y'}]\n");
        let result = Attributor::new(&cfg).attribute([key("h", "xy")].into_iter());
        assert_eq!(result.conflicts, 0);
        assert_eq!(result.selector_matches, vec![vec![1, 1]]);
    }

    #[test]
    fn prefix_index_agrees_with_matching_every_glob() {
        let patterns = [
            "acme-*",
            "acme-prod-?",
            "acme",
            "*-prod",
            "?cme-*",
            "[ab]cme-*",
            "ac[!x]e-*",
            "",
            "*",
            "globex-*-eu",
            "é-*",
            "acme-prod-1*",
            "acme-prod-[0-9]",
        ];
        let index = GlobPrefixes::new(&patterns);
        let compiled: Vec<glob::Pattern> = patterns
            .iter()
            .map(|p| glob::Pattern::new(p).unwrap())
            .collect();
        let names = [
            "",
            "a",
            "acme",
            "acme-",
            "acme-prod",
            "acme-prod-1",
            "acme-prod-12",
            "bcme-x",
            "x-prod",
            "globex-a-eu",
            "é-x",
            "é",
            "ACME-prod",
            "acmeé",
            "acme-prod-x",
        ];
        let mut candidates = Vec::new();
        for name in names {
            index.candidates(name, &mut candidates);
            let indexed: Vec<usize> = candidates
                .iter()
                .copied()
                .filter(|&i| compiled[i].matches(name))
                .collect();
            let brute: Vec<usize> = (0..compiled.len())
                .filter(|&i| compiled[i].matches(name))
                .collect();
            assert_eq!(indexed, brute, "name {name:?}");
        }
    }

    #[test]
    fn selector_that_matches_nothing_counts_zero() {
        let cfg = config("companies:\n  a:\n    keys: [typo-key, real]\n");
        let result = Attributor::new(&cfg).attribute([key("h", "real")].into_iter());
        assert_eq!(result.selector_matches, vec![vec![0, 1]]);
    }

    #[test]
    fn unread_lists_leave_their_companies_and_those_below_them_waiting() {
        let cfg = config(&format!(
            "companies:\n  hashed:\n    keys: [{{hash: h}}]\n  by_id:\n    keys: [{{workspace: '{}'}}]\n  \
             by_slug:\n    keys: [{{workspace: team}}]\n  by_creator:\n    keys: [{{creator: '@a.com'}}]\n  \
             globbed:\n    keys: [{{name_glob: 'x*'}}]\n",
            "11111111-1111-4111-8111-111111111111"
        ));
        use Lookup::{MemberEmails as M, WorkspaceSlugs as W};
        assert_eq!(waiting_for(&cfg, true, true), [None; 6]);
        assert_eq!(
            waiting_for(&cfg, false, true),
            [None, None, Some(W), Some(W), Some(W), Some(W)]
        );
        assert_eq!(
            waiting_for(&cfg, true, false),
            [None, None, None, Some(M), Some(M), Some(M)]
        );
        // Without a creator selector the member list is never needed.
        let cfg = config("companies:\n  a:\n    keys: [{name_glob: '*'}]\n");
        assert_eq!(waiting_for(&cfg, false, false), [None, None]);
    }
}
