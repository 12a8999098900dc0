//! Source positions of the keys in a YAML document, so that errors found after parsing (unknown
//! kinds, bad inputs, cycles, stage config) can still name a line and column.

use std::collections::{HashMap, HashSet};

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// A 1-based line and column in the workflow file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Position {
    /// Line, counting from 1.
    pub line: usize,
    /// Column, counting from 1.
    pub column: usize,
}

/// Positions by dotted key path: `stages.train.with.max_side` → where that key is written.
#[derive(Debug, Default, Clone)]
pub struct Positions {
    keys: HashMap<String, Position>,
    duplicates: Vec<Duplicate>,
}

/// A key written twice in one mapping (YAML forbids it; serde would keep only one of the values).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Duplicate {
    /// Dotted path of the mapping holding the key (empty for the top level).
    pub parent: String,
    /// The repeated key.
    pub key: String,
    /// Where the key is written first.
    pub first: Position,
    /// Where it is written again.
    pub again: Position,
}

impl Positions {
    /// Indexes `source`; a document that does not parse yields an empty index (serde_yaml reports
    /// the syntax error with its own position).
    pub fn index(source: &str) -> Self {
        let mut recv = Receiver::default();
        let mut parser = Parser::new_from_str(source);
        let _ = parser.load(&mut recv, false);
        Self {
            keys: recv.keys,
            duplicates: recv.duplicates,
        }
    }

    /// The first key written twice in the same mapping, if any.
    pub fn first_duplicate(&self) -> Option<&Duplicate> {
        self.duplicates.first()
    }

    /// Whether the key at `path` is written in the document.
    pub fn contains(&self, path: &str) -> bool {
        self.keys.contains_key(path)
    }

    /// The position of the longest known prefix of `path` (so a missing key falls back to its parent).
    pub fn find(&self, path: &str) -> Position {
        let mut p = path;
        loop {
            if let Some(pos) = self.keys.get(p) {
                return *pos;
            }
            match p.rfind('.') {
                Some(i) => p = &p[..i],
                None => return Position { line: 1, column: 1 },
            }
        }
    }
}

enum Frame {
    Map {
        key: Option<String>,
        seen: HashSet<String>,
    },
    Seq {
        index: usize,
    },
}

#[derive(Default)]
struct Receiver {
    stack: Vec<Frame>,
    path: Vec<String>,
    keys: HashMap<String, Position>,
    duplicates: Vec<Duplicate>,
}

impl Receiver {
    /// Called when a value (scalar or container) starts: returns the path segment it lives under.
    fn enter_value(&mut self) -> Option<String> {
        match self.stack.last_mut() {
            Some(Frame::Map { key, .. }) => key.take(),
            Some(Frame::Seq { index }) => {
                *index += 1;
                Some((*index - 1).to_string())
            }
            None => None,
        }
    }
}

impl MarkedEventReceiver for Receiver {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let expecting_key = matches!(self.stack.last(), Some(Frame::Map { key: None, .. }));
        match ev {
            Event::Scalar(value, ..) if expecting_key => {
                let mut path = self.path.clone();
                path.push(value.clone());
                let pos = Position {
                    line: mark.line(),
                    column: mark.col() + 1,
                };
                let first = *self.keys.entry(path.join(".")).or_insert(pos);
                if let Some(Frame::Map { key, seen }) = self.stack.last_mut() {
                    if !seen.insert(value.clone()) {
                        self.duplicates.push(Duplicate {
                            parent: self.path.join("."),
                            key: value.clone(),
                            first,
                            again: pos,
                        });
                    }
                    *key = Some(value);
                }
            }
            Event::Scalar(..) | Event::Alias(..) => {
                self.enter_value();
            }
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                if let Some(seg) = self.enter_value() {
                    self.path.push(seg);
                }
                let is_top = self.stack.is_empty();
                self.stack.push(if matches!(ev, Event::MappingStart(..)) {
                    Frame::Map {
                        key: None,
                        seen: HashSet::new(),
                    }
                } else {
                    Frame::Seq { index: 0 }
                });
                if is_top {
                    self.path.clear();
                }
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
                if !self.stack.is_empty() {
                    self.path.pop();
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nested_keys_and_falls_back_to_parents() {
        let src = "name: x\nstages:\n  a:\n    kind: ingest\n    with:\n      max_side: 3\n  b:\n    kind: y\n";
        let p = Positions::index(src);
        assert_eq!(p.find("name"), Position { line: 1, column: 1 });
        assert_eq!(p.find("stages.a.kind"), Position { line: 4, column: 5 });
        assert_eq!(
            p.find("stages.a.with.max_side"),
            Position { line: 6, column: 7 }
        );
        assert_eq!(p.find("stages.b.kind"), Position { line: 8, column: 5 });
        assert_eq!(
            p.find("stages.b.with.nothing"),
            Position { line: 7, column: 3 }
        );
    }
}
