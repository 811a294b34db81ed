//! The layer table in `docs/architecture.md` is the law of imports: this test
//! reads every `crate::` path in the library's non-test code and checks it
//! against the table, so the doc and the code cannot drift apart.
//!
//! Rules, as the doc states them:
//! - a module of the stack imports only modules of the rows below its own;
//! - the "beside" row (the simulator and the demo) imports only the rows
//!   below "pages", and earlier beside modules may import later ones;
//! - no module of the stack imports a beside module outside its tests.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

const DOC: &str = "docs/architecture.md";
const TABLE_HEADING: &str = "## Modules and what they may import";

/// One row of the table: its layer name and the crate modules in it.
struct Row {
    layer: String,
    modules: Vec<String>,
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The module a table cell names: `server.rs` → server, `upstream/` → upstream.
fn module_of_cell(name: &str) -> Option<String> {
    let name = name.trim();
    let module = name
        .strip_suffix(".rs")
        .or_else(|| name.strip_suffix('/'))?;
    (!module.is_empty() && !module.contains('/')).then(|| module.to_string())
}

fn layer_table() -> Vec<Row> {
    let doc = fs::read_to_string(root().join(DOC)).expect("docs/architecture.md");
    let start = doc.find(TABLE_HEADING).expect("the layer table's heading");
    let mut rows = Vec::new();
    for line in doc[start..].lines().skip(1) {
        let line = line.trim();
        if line.starts_with('#') {
            break;
        }
        if !line.starts_with('|') || line.starts_with("|---") || line.starts_with("| layer") {
            continue;
        }
        let cells: Vec<&str> = line.trim_matches('|').split('|').collect();
        assert!(cells.len() >= 3, "a layer row has three cells: {line}");
        // Only the module cell's backticked names count; the concern cell
        // may name files inside a module.
        let modules = cells[1]
            .split('`')
            .skip(1)
            .step_by(2)
            .filter_map(module_of_cell)
            .collect();
        rows.push(Row {
            layer: cells[0].trim().to_string(),
            modules,
        });
    }
    assert!(rows.len() >= 5, "the layer table has its rows");
    rows
}

/// Every `.rs` file under `dir`.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("src/") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level crate module a file belongs to (`src/upstream/keys.rs` → upstream).
fn owner(path: &Path) -> Option<String> {
    let relative = path.strip_prefix(root().join("src")).ok()?;
    let first = relative.components().next()?.as_os_str().to_str()?;
    let module = first.strip_suffix(".rs").unwrap_or(first);
    (!matches!(module, "lib" | "main")).then(|| module.to_string())
}

/// The file's code before its test module, without comments.
fn non_test_code(text: &str) -> String {
    let mut code = String::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("#[cfg(test)]") {
            break;
        }
        if trimmed.starts_with("//") {
            continue;
        }
        code.push_str(line);
        code.push('\n');
    }
    code
}

/// The crate modules a piece of code names: `crate::x::…` and `crate::{x, y::…}`.
fn imported_modules(code: &str) -> Vec<String> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let mut found = Vec::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Top-level names of the group only.
            let mut depth = 0;
            let mut item_start = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if item_start && !c.is_whitespace() => {
                        item_start = false;
                        found.push(ident(&group[i..]));
                    }
                    _ => {}
                }
            }
        } else {
            found.push(ident(rest));
        }
    }
    found.retain(|m| !m.is_empty());
    found
}

#[test]
fn every_import_follows_the_layer_table() {
    let rows = layer_table();
    let mut row_of: BTreeMap<String, usize> = BTreeMap::new();
    for (i, row) in rows.iter().enumerate() {
        for module in &row.modules {
            assert!(
                row_of.insert(module.clone(), i).is_none(),
                "{module} is in two rows of the layer table"
            );
        }
    }
    let beside = rows
        .iter()
        .position(|r| r.layer == "beside")
        .expect("a \"beside\" row");
    let pages = rows
        .iter()
        .position(|r| r.layer == "pages")
        .expect("a \"pages\" row");
    let mut files = Vec::new();
    sources(&root().join("src"), &mut files);
    files.sort();
    let mut problems = Vec::new();
    let mut seen = 0;
    for file in &files {
        let Some(importer) = owner(file) else {
            continue;
        };
        let Some(&from) = row_of.get(&importer) else {
            problems.push(format!(
                "{}: module `{importer}` is not in the layer table",
                file.display()
            ));
            continue;
        };
        let text = fs::read_to_string(file).expect("source file");
        for imported in imported_modules(&non_test_code(&text)) {
            if imported == importer {
                continue;
            }
            seen += 1;
            let Some(&to) = row_of.get(&imported) else {
                problems.push(format!(
                    "{}: imports `{imported}`, which is not in the layer table",
                    file.display()
                ));
                continue;
            };
            let allowed = if from == beside && to == beside {
                let order = &rows[beside].modules;
                let position = |m: &str| order.iter().position(|x| x == m);
                position(&importer) < position(&imported)
            } else if from == beside {
                to > pages && to != beside
            } else {
                to > from && to != beside
            };
            if !allowed {
                problems.push(format!(
                    "{}: `{importer}` ({}) imports `{imported}` ({}), which is not below it",
                    file.display(),
                    rows[from].layer,
                    rows[to].layer
                ));
            }
        }
    }
    assert!(seen > 20, "the scan found the crate's imports ({seen})");
    assert!(
        problems.is_empty(),
        "imports that break the layer table in {DOC}:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_scanner_reads_grouped_and_nested_paths() {
    let code = "use crate::{config::{Config, Company}, money::Usd};\nlet e = crate::upstream::Endpoint::Keys;\n";
    assert_eq!(imported_modules(code), ["config", "money", "upstream"]);
    let text =
        "use crate::body;\n// use crate::server;\n#[cfg(test)]\nmod tests { use crate::sim; }\n";
    assert_eq!(imported_modules(&non_test_code(text)), ["body"]);
    assert_eq!(module_of_cell("upstream/"), Some("upstream".into()));
    assert_eq!(module_of_cell("webconfig/tls.rs"), None);
}
