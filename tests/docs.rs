//! The README stays true: its copied sections match docs/, the quick start is
//! the two commands, and every alert's runbook link lands on a README heading.

use std::collections::BTreeSet;
use std::path::Path;

fn read(rel: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

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

#[test]
fn readme_sections_match_their_docs_files() {
    let readme = read("README.md");
    let mut blocks = 0;
    for (i, _) in readme.match_indices("<!-- BEGIN ") {
        let rest = &readme[i + "<!-- BEGIN ".len()..];
        let name = &rest[..rest.find(" -->").expect("marker end")];
        let start = i + "<!-- BEGIN ".len() + name.len() + " -->\n".len();
        let end = readme[start..]
            .find(&format!("<!-- END {name} -->"))
            .map(|e| start + e)
            .unwrap_or_else(|| panic!("no END marker for {name}"));
        let doc = read(name);
        let doc_body: String = doc
            .lines()
            .skip_while(|l| l.starts_with("<!--") || l.trim().is_empty())
            .collect::<Vec<_>>()
            .join("\n");
        assert_eq!(
            readme[start..end].trim_end(),
            doc_body.trim_end(),
            "README.md's copy of {name} is out of date: run `python3 scripts/sync-readme.py`"
        );
        blocks += 1;
    }
    assert!(
        blocks >= 3,
        "expected the alerts, security and deployment blocks"
    );
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

#[test]
fn every_runbook_url_lands_on_a_readme_heading() {
    let readme = read("README.md");
    let anchors: BTreeSet<String> = readme
        .lines()
        .filter(|l| l.starts_with('#'))
        .map(|l| anchor(l.trim_start_matches('#')))
        .collect();
    let mut checked = 0;
    for entry in
        std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("prometheus")).unwrap()
    {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for line in text.lines().filter(|l| l.contains("runbook_url")) {
            let fragment = line
                .split("README.md#")
                .nth(1)
                .unwrap_or_else(|| panic!("runbook_url not into README.md: {line}"))
                .trim_matches(|c: char| c == '"' || c == '\'' || c.is_whitespace());
            assert!(
                anchors.contains(fragment),
                "{}: no README heading for #{fragment}",
                path.display()
            );
            checked += 1;
        }
    }
    assert!(
        checked >= 10,
        "expected runbook links in the alert rules, found {checked}"
    );
}

#[test]
fn every_exported_family_is_documented() {
    // The metric names the renderer can emit, taken from its source, all appear in the README table.
    let readme = read("README.md");
    let mut names = BTreeSet::new();
    for file in ["src/exposition.rs", "src/telemetry.rs"] {
        let source = read(file);
        for piece in source.split('"').skip(1).step_by(2) {
            if piece.starts_with("openrouter_")
                && piece.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                names.insert(piece.to_string());
            }
        }
    }
    assert!(names.len() >= 25, "{names:?}");
    for name in names {
        assert!(
            readme.contains(&format!("`{name}`")),
            "{name} is not in the README's metrics table"
        );
    }
}
