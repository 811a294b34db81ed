//! YAML helpers shared by both config files (the exporter's and the web
//! config): mappings whose keys must be unique, and locating a key's lines.

use std::fmt;

use indexmap::IndexMap;
use serde::Deserialize;

/// A YAML mapping with string keys, in file order, that remembers keys given
/// twice instead of silently keeping the last (what `IndexMap`/`BTreeMap`
/// deserialisation does). The first definition is kept; callers turn
/// [`UniqueMap::duplicates`] into errors that name both locations.
#[derive(Debug)]
pub(crate) struct UniqueMap<V> {
    pub entries: IndexMap<String, V>,
    pub duplicates: Vec<Duplicate>,
}

impl<V> Default for UniqueMap<V> {
    fn default() -> Self {
        UniqueMap {
            entries: IndexMap::new(),
            duplicates: Vec::new(),
        }
    }
}

/// A key defined twice in one mapping: its 1-based entry numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Duplicate {
    pub key: String,
    pub first_entry: usize,
    pub again_entry: usize,
}

impl Duplicate {
    /// "company \"acme\" is defined twice: at lines 3 and 9 (entries 1 and 3);
    /// merge the two". Lines are found for block-style YAML under `parents`
    /// (the mapping's path from the top); entry numbers are always given.
    pub fn describe(&self, what: &str, text: &str, parents: &[&str]) -> String {
        let lines = block_key_lines(text, parents, &self.key);
        let lines = match lines.as_slice() {
            [first, again, ..] => format!("at lines {first} and {again} ("),
            _ => "(".to_string(),
        };
        format!(
            "{what} {:?} is defined twice: {lines}entries {} and {} of {}); \
             merge the two, only one definition can count",
            self.key,
            self.first_entry,
            self.again_entry,
            parents.join(".")
        )
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for UniqueMap<V> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MapVisitor<V>(std::marker::PhantomData<V>);
        impl<'de, V: Deserialize<'de>> serde::de::Visitor<'de> for MapVisitor<V> {
            type Value = UniqueMap<V>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map")
            }

            fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
                // `companies:` with nothing under it, as an empty map.
                Ok(UniqueMap::default())
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                let mut out = UniqueMap::default();
                let mut entry = 0;
                while let Some(key) = map.next_key::<String>()? {
                    entry += 1;
                    let value: V = map.next_value()?;
                    match out.entries.get_index_of(&key) {
                        Some(first) => out.duplicates.push(Duplicate {
                            key,
                            first_entry: first + 1,
                            again_entry: entry,
                        }),
                        None => {
                            out.entries.insert(key, value);
                        }
                    }
                }
                Ok(out)
            }
        }
        deserializer.deserialize_map(MapVisitor(std::marker::PhantomData))
    }
}

/// 1-based line numbers where `key:` is written as a block-style entry of the
/// mapping at `parents` (each parent a block-style key nested in the one
/// before, the first at column 0). Best effort: flow-style mappings give none.
pub(crate) fn block_key_lines(text: &str, parents: &[&str], key: &str) -> Vec<usize> {
    fn indent(line: &str) -> usize {
        line.len() - line.trim_start_matches(' ').len()
    }
    fn is_key(line: &str, key: &str) -> bool {
        let t = line.trim_start_matches(' ');
        [
            format!("{key}:"),
            format!("\"{key}\":"),
            format!("'{key}':"),
        ]
        .iter()
        .any(|k| t == k.as_str() || t.starts_with(&format!("{k} ")))
    }
    let lines: Vec<&str> = text.lines().collect();
    // (first line index, last line index exclusive, indent of the children)
    let mut start = 0;
    let mut end = lines.len();
    let mut child_indent = 0;
    let content = |l: &str| !l.trim().is_empty() && !l.trim_start().starts_with('#');
    for parent in parents {
        let Some(at) =
            (start..end).find(|&i| indent(lines[i]) == child_indent && is_key(lines[i], parent))
        else {
            return Vec::new();
        };
        let Some(first_child) = (at + 1..end).find(|&i| content(lines[i])) else {
            return Vec::new();
        };
        let inner = indent(lines[first_child]);
        if inner <= child_indent {
            return Vec::new();
        }
        start = first_child;
        end = (first_child..end)
            .find(|&i| content(lines[i]) && indent(lines[i]) < inner)
            .unwrap_or(end);
        child_indent = inner;
    }
    (start..end)
        .filter(|&i| indent(lines[i]) == child_indent && is_key(lines[i], key))
        .map(|i| i + 1)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_key_lines_follow_indentation() {
        let text = "a:\n  b:\n    x: 1\n    # x: comment\n    x: 2\n  x: 3\nx: 4\n";
        assert_eq!(block_key_lines(text, &["a", "b"], "x"), vec![3, 5]);
        assert_eq!(block_key_lines(text, &["a"], "x"), vec![6]);
        assert_eq!(block_key_lines(text, &[], "x"), vec![7]);
        assert!(block_key_lines("a: {x: 1}\n", &["a"], "x").is_empty());
    }
}
