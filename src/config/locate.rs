//! Maps YAML paths (`devices[2].points[0].signal`) to line and column in the
//! file, so every config error can say where to look.
//!
//! Owns the path syntax used in messages. Must not interpret values: it only
//! walks the parser's events.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// 1-based line and column of a YAML node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub line: usize,
    pub col: usize,
}

/// Every path in a YAML document with the location of its key (for mapping
/// entries) or of its first token (for sequence items).
#[derive(Debug, Default)]
pub struct Locations {
    map: HashMap<String, Location>,
}

enum Frame {
    Map { path: String, key: Option<String> },
    Seq { path: String, index: usize },
}

struct Walker {
    stack: Vec<Frame>,
    map: HashMap<String, Location>,
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

impl Walker {
    fn loc(mark: Marker) -> Location {
        Location {
            line: mark.line(),
            col: mark.col() + 1,
        }
    }

    /// Called for a node that starts at `mark`; returns the node's path, or
    /// `None` when the node is a mapping key (recorded instead).
    fn enter_node(&mut self, mark: Marker, scalar: Option<&str>) -> Option<String> {
        match self.stack.last_mut() {
            None => Some(String::new()),
            Some(Frame::Seq { path, index }) => {
                let p = format!("{path}[{index}]");
                *index += 1;
                self.map.entry(p.clone()).or_insert(Self::loc(mark));
                Some(p)
            }
            Some(Frame::Map { path, key }) => match key.take() {
                Some(k) => Some(join(path, &k)),
                None => {
                    let k = scalar.unwrap_or("?").to_string();
                    let p = join(path, &k);
                    self.map.entry(p).or_insert(Self::loc(mark));
                    *key = Some(k);
                    None
                }
            },
        }
    }
}

impl MarkedEventReceiver for Walker {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        match ev {
            Event::Scalar(value, ..) => {
                self.enter_node(mark, Some(&value));
            }
            Event::Alias(_) => {
                self.enter_node(mark, None);
            }
            Event::MappingStart(..) => {
                let path = self.enter_node(mark, None).unwrap_or_default();
                self.stack.push(Frame::Map { path, key: None });
            }
            Event::SequenceStart(..) => {
                let path = self.enter_node(mark, None).unwrap_or_default();
                self.stack.push(Frame::Seq { path, index: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

impl Locations {
    /// Indexes `text`. A document that does not parse gives an empty index
    /// (the YAML deserializer reports the syntax error with its own location).
    pub fn index(text: &str) -> Locations {
        let mut walker = Walker {
            stack: Vec::new(),
            map: HashMap::new(),
        };
        let mut parser = Parser::new_from_str(text);
        if parser.load(&mut walker, false).is_err() {
            return Locations::default();
        }
        Locations { map: walker.map }
    }

    /// The location of `path`, or of its nearest ancestor that has one.
    pub fn find(&self, path: &str) -> Option<Location> {
        let mut p = path;
        loop {
            if let Some(l) = self.map.get(p) {
                return Some(*l);
            }
            let cut = p.rfind(['.', '['])?;
            p = &p[..cut];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nested_paths() {
        let text = "gateway:\n  id: x\ndevices:\n  - name: a\n    points:\n      - { name: p, signal: sine }\n";
        let l = Locations::index(text);
        assert_eq!(l.find("gateway.id"), Some(Location { line: 2, col: 3 }));
        assert_eq!(
            l.find("devices[0].name"),
            Some(Location { line: 4, col: 5 })
        );
        assert_eq!(
            l.find("devices[0].points[0].signal").map(|l| l.line),
            Some(6)
        );
        // unknown child falls back to the parent
        assert_eq!(l.find("devices[0].nope").map(|l| l.line), Some(4));
    }
}
