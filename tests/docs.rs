//! The README stays true: the quick start is the two commands, every alert's
//! runbook link lands on a heading of the file it names, and the README's
//! metrics table names exactly the families the exporter can emit.

mod common;

use common::tools::{read, root};
use openrouter_cost_exporter::exposition::families;
use openrouter_cost_exporter::telemetry;
use std::collections::BTreeSet;

/// GitHub's heading anchor: lowercase, spaces to dashes, punctuation dropped.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The heading anchors of a Markdown file (headings inside code blocks skipped).
fn heading_anchors(rel: &str) -> BTreeSet<String> {
    let mut in_code = false;
    read(rel)
        .lines()
        .filter(|l| {
            if l.trim_start().starts_with("```") {
                in_code = !in_code;
            }
            !in_code && l.starts_with('#')
        })
        .map(|l| anchor(l.trim_start_matches('#')))
        .collect()
}

#[test]
fn quick_start_is_exactly_the_two_commands() {
    let readme = read("README.md");
    let start = readme.find("## Quick start").expect("quick start section");
    let section = &readme[start..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |e| e + 3)];
    let commands: Vec<&str> = section
        .split("```sh\n")
        .skip(1)
        .flat_map(|block| block.split("```").next().unwrap_or("").lines())
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(commands, ["cargo run --release -- demo", "cargo test"]);
}

/// A `runbook_url` may name `README.md#anchor` or `docs/alerts.md#anchor`;
/// the anchor must be a heading of the file it names.
#[test]
fn every_runbook_url_lands_on_a_heading() {
    const TARGETS: [&str; 2] = ["README.md", "docs/alerts.md"];
    let anchors: Vec<BTreeSet<String>> = TARGETS.iter().map(|f| heading_anchors(f)).collect();
    let mut checked = 0;
    for entry in std::fs::read_dir(root().join("prometheus")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for line in text.lines().filter(|l| l.contains("runbook_url")) {
            let url = line
                .split_once("runbook_url:")
                .map_or("", |(_, url)| url)
                .trim()
                .trim_matches(|c: char| c == '"' || c == '\'');
            let (file, fragment) = url.split_once('#').unwrap_or_else(|| {
                panic!("{}: runbook_url without #anchor: {line}", path.display())
            });
            let Some(i) = TARGETS
                .iter()
                .position(|t| file.ends_with(&format!("/{t}")))
            else {
                panic!(
                    "{}: runbook_url names none of {TARGETS:?}: {line}",
                    path.display()
                );
            };
            assert!(
                anchors[i].contains(fragment),
                "{}: no heading in {} for #{fragment}",
                path.display(),
                TARGETS[i]
            );
            checked += 1;
        }
    }
    assert!(
        checked >= 10,
        "expected runbook links in the alert rules, found {checked}"
    );
}

/// The families in the README's metrics table: the first cell of each row
/// of the "Metrics" section that names an `openrouter_` family.
fn readme_families() -> BTreeSet<String> {
    let readme = read("README.md");
    let start = readme.find("\n## Metrics").expect("metrics section");
    let section = &readme[start + 1..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |e| e + 3)];
    section
        .lines()
        .filter_map(|l| l.strip_prefix("| `openrouter_"))
        .filter_map(|l| l.split_once('`'))
        .map(|(rest, _)| format!("openrouter_{rest}"))
        .collect()
}

#[test]
fn every_exported_family_is_documented() {
    // The exporter's table of families (the one that writes every HELP line)
    // and the README's metrics table name the same families.
    let table: BTreeSet<String> = families()
        .map(|f| f.name)
        .chain(telemetry::COUNTER_FAMILIES)
        .map(str::to_string)
        .collect();
    assert!(table.len() >= 25, "{table:?}");
    let readme = readme_families();
    let undocumented: Vec<_> = table.difference(&readme).collect();
    assert!(
        undocumented.is_empty(),
        "not in the README's metrics table: {undocumented:?}"
    );
    let unknown: Vec<_> = readme.difference(&table).collect();
    assert!(
        unknown.is_empty(),
        "in the README's metrics table but the exporter has no such family: {unknown:?}"
    );
}
