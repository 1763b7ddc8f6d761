//! One world file: a RON scene in Bevy's convention, an `entities` map from
//! object id to `(components: {"name": value})`, plus, in a mod, a `remove`
//! list of object ids.
//!
//! ```ron
//! (
//!     entities: {
//!         7: (components: {"item": (kind: "gold", count: 3, x: 40, y: 41)}),
//!     },
//!     remove: [12],
//! )
//! ```
//!
//! Parsing keeps going after a bad component or entity, so one pass reports
//! every problem of the file, each at its line and column: the file is read
//! into borrowed [`RawValue`]s first, and each value is then parsed on its own,
//! with its error position moved back into the file.

use std::fmt::{self, Write as _};
use std::path::Path;
use std::sync::Arc;

use ron::value::RawValue;
use serde::Deserialize;
use serde::de::{MapAccess, Visitor};

use super::problems::{Problem, Problems, Source};
use super::{Thing, WorldObject};
use crate::game::{House, Item, TerrainRow, ZoneInfo};

/// The component names a world file may use, in the order they are written.
pub(crate) const COMPONENTS: [&str; 4] = ["zone", "terrain", "house", "item"];

/// What one file says: its objects and (in a mod) the objects it removes.
#[derive(Default, Debug)]
pub(crate) struct SceneFile {
    /// Objects, in file order, each with where it is written.
    pub(crate) objects: Vec<(u64, Thing, Source)>,
    /// Objects removed, each with where it is written.
    pub(crate) removed: Vec<(u64, Source)>,
}

/// A map kept as written, duplicates included, with borrowed raw values.
struct Entries<'a, K>(Vec<(K, &'a RawValue)>);

impl<K> Default for Entries<'_, K> {
    fn default() -> Self {
        Entries(Vec::new())
    }
}

impl<'de: 'a, 'a, K: Deserialize<'de>> Deserialize<'de> for Entries<'a, K> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntriesVisitor<'a, K>(std::marker::PhantomData<(&'a (), K)>);
        impl<'de: 'a, 'a, K: Deserialize<'de>> Visitor<'de> for EntriesVisitor<'a, K> {
            type Value = Entries<'a, K>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry::<K, &'a RawValue>()? {
                    entries.push(entry);
                }
                Ok(Entries(entries))
            }
        }
        deserializer.deserialize_map(EntriesVisitor(std::marker::PhantomData))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScene<'a> {
    #[serde(borrow, default)]
    entities: Entries<'a, u64>,
    #[serde(borrow, default)]
    remove: Present<'a>,
}

/// A raw value that may be left out (written plainly, not as `Some(...)`).
#[derive(Default)]
struct Present<'a>(Option<&'a RawValue>);

impl<'de: 'a, 'a> Deserialize<'de> for Present<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        <&'a RawValue>::deserialize(deserializer).map(|v| Present(Some(v)))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntity<'a> {
    #[serde(borrow)]
    components: Entries<'a, String>,
}

/// Parses `text`, the contents of `file`; every problem found goes to `problems`.
pub(crate) fn parse(file: &Arc<Path>, text: &str, problems: &mut Problems) -> SceneFile {
    let mut scene = SceneFile::default();
    let doc = Doc::new(file, text);
    let raw: RawScene<'_> = match ron::from_str(text) {
        Ok(raw) => raw,
        Err(e) => {
            problems.push(doc.error(text, &e));
            return scene;
        }
    };
    for (id, value) in raw.entities.0 {
        let at = doc.source(value);
        let entity: RawEntity<'_> = match value.into_rust() {
            Ok(entity) => entity,
            Err(e) => {
                problems.push(doc.error(value.get_ron(), &e));
                continue;
            }
        };
        let mut things = Vec::new();
        for (name, value) in entity.components.0 {
            match parse_component(&name, value) {
                Ok(thing) => things.push(thing),
                Err(ParseComponent::Unknown) => problems.push(Problem::at(
                    &doc.source(value),
                    format!(
                        "`{name}` is not a component of this game; the components are {}",
                        COMPONENTS.join(", ")
                    ),
                )),
                Err(ParseComponent::Bad(e)) => problems.push(doc.error(value.get_ron(), &e)),
            }
        }
        match things.len() {
            1 => scene.objects.push((id, things.remove(0), at)),
            0 if problems.is_empty() => problems.push(Problem::at(
                &at,
                format!("object {id} has no component; give it one of {}", COMPONENTS.join(", ")),
            )),
            0 => {}
            n => problems.push(Problem::at(
                &at,
                format!("object {id} has {n} components; an object of this game is exactly one of them"),
            )),
        }
    }
    if let Some(value) = raw.remove.0 {
        let at = doc.source(value);
        match value.into_rust::<Vec<u64>>() {
            Ok(ids) => scene.removed.extend(ids.into_iter().map(|id| (id, at.clone()))),
            Err(e) => problems.push(doc.error(value.get_ron(), &e)),
        }
    }
    scene
}

enum ParseComponent {
    Unknown,
    Bad(ron::error::SpannedError),
}

fn parse_component(name: &str, value: &RawValue) -> Result<Thing, ParseComponent> {
    let thing = match name {
        "zone" => value.into_rust::<ZoneInfo>().map(Thing::Zone),
        "terrain" => value.into_rust::<TerrainRow>().map(Thing::Terrain),
        "house" => value.into_rust::<House>().map(Thing::House),
        "item" => value.into_rust::<Item>().map(Thing::Item),
        _ => return Err(ParseComponent::Unknown),
    };
    thing.map_err(ParseComponent::Bad)
}

/// A file being parsed: its path, its text, and where each line starts, so
/// a place is turned into line and column in O(log lines).
struct Doc<'a> {
    file: &'a Arc<Path>,
    text: &'a str,
    line_starts: Vec<usize>,
}

impl<'a> Doc<'a> {
    fn new(file: &'a Arc<Path>, text: &'a str) -> Doc<'a> {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Doc {
            file,
            text,
            line_starts,
        }
    }

    /// The place of byte `offset`.
    fn at(&self, offset: usize) -> Source {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let line = self.line_starts.partition_point(|&start| start <= offset);
        let start = self.line_starts[line - 1];
        Source::File {
            file: self.file.clone(),
            line,
            col: self.text[start..offset].chars().count() + 1,
        }
    }

    /// Where `part` (a raw value of this file) begins, skipping leading blanks.
    fn source(&self, part: &RawValue) -> Source {
        let part = part.get_ron();
        let skipped = part.len() - part.trim_start().len();
        self.at(offset_in(self.text, part) + skipped)
    }

    /// A parse error of `part` (a slice of this file) as a problem at its place.
    fn error(&self, part: &str, error: &ron::error::SpannedError) -> Problem {
        let inner = offset_of(part, error.span.start.line, error.span.start.col);
        Problem::at(&self.at(offset_in(self.text, part) + inner), plain(&error.code))
    }
}

/// A RON error code as a sentence.
fn plain(code: &ron::Error) -> String {
    let text = code.to_string();
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => text,
    }
}

/// The byte offset of `part` within `text` (`part` is a slice of it).
fn offset_in(text: &str, part: &str) -> usize {
    (part.as_ptr() as usize)
        .checked_sub(text.as_ptr() as usize)
        .filter(|&o| o <= text.len())
        .unwrap_or(0)
}

/// The byte offset of 1-based (line, column in characters) within `text`.
fn offset_of(text: &str, line: usize, col: usize) -> usize {
    let mut offset = 0;
    for (n, l) in text.split_inclusive('\n').enumerate() {
        if n + 1 == line {
            return offset + l.char_indices().nth(col.saturating_sub(1)).map_or(l.len(), |(i, _)| i);
        }
        offset += l.len();
    }
    text.len()
}

/// Writes `objects` (all of one shard) as a world file, one object per line.
pub(crate) fn write(objects: &[&WorldObject], removed: &[u64]) -> String {
    let mut out = String::from("(\n    entities: {\n");
    for object in objects {
        let _ = writeln!(
            out,
            "        {}: (components: {{\"{}\": {}}}),",
            object.id,
            object.thing.name(),
            object.thing.to_ron()
        );
    }
    out.push_str("    },\n");
    if !removed.is_empty() {
        let ids: Vec<String> = removed.iter().map(u64::to_string).collect();
        let _ = writeln!(out, "    remove: [{}],", ids.join(", "));
    }
    out.push_str(")\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems_of(text: &str) -> Vec<String> {
        let file: Arc<Path> = Arc::from(Path::new("meadow/1000.scn.ron"));
        let mut problems = Problems::default();
        parse(&file, text, &mut problems);
        problems.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn every_bad_component_is_reported_at_its_line_and_column() {
        let text = "(\n    entities: {\n        1: (components: {\"item\": (kind: \"gold\", count: -1, x: 0, y: 0)}),\n        2: (components: {\"tree\": (x: 1)}),\n        3: (components: {\"terrain\": (x: 0, y: 0, tiles: \"..?\")}),\n        4: (components: {\"house\": (owner: \"a\", name: \"b\", x: 1, y: 1, size: (2, 2), color: (1, 2, 3))}),\n    },\n)\n";
        let problems = problems_of(text);
        assert_eq!(problems.len(), 4, "{problems:#?}");
        assert!(problems[0].starts_with("meadow/1000.scn.ron:3:"), "{}", problems[0]);
        assert!(problems[1].starts_with("meadow/1000.scn.ron:4:34:"), "{}", problems[1]);
        assert!(problems[1].contains("`tree` is not a component"), "{}", problems[1]);
        assert!(problems[2].starts_with("meadow/1000.scn.ron:5:"), "{}", problems[2]);
        assert!(problems[2].contains("`?` is not a tile"), "{}", problems[2]);
        assert!(problems[3].starts_with("meadow/1000.scn.ron:6:"), "{}", problems[3]);
        assert!(problems[3].contains("color"), "{}", problems[3]);
    }

    #[test]
    fn a_syntax_error_is_reported_where_it_is() {
        let problems =
            problems_of("(\n  entities: {\n    1: (components: {\"item\": (kind: \"gold\" count: 1)}),\n  },\n)");
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert!(problems[0].starts_with("meadow/1000.scn.ron:3:"), "{}", problems[0]);
    }

    /// One object of each kind, as a fixed example.
    fn examples() -> Vec<WorldObject> {
        let shard = hoard_engine::ShardId(1000);
        vec![
            WorldObject::new(
                1,
                shard,
                Thing::Zone(ZoneInfo {
                    index: 1,
                    west: Some("meadow".into()),
                    south: Some("coast".into()),
                    ..ZoneInfo::default()
                }),
            ),
            WorldObject::new(
                2,
                shard,
                Thing::Terrain(TerrainRow {
                    x: 0,
                    y: 0,
                    tiles: (0..32).map(|i| (i % 6) as u8).collect(),
                }),
            ),
            WorldObject::new(
                3,
                shard,
                Thing::House(House {
                    owner: "ann".into(),
                    name: "ann's \"mill\"".into(),
                    x: 3,
                    y: 4,
                    size: (2, 3),
                    colour: (200, 120, 60),
                }),
            ),
            WorldObject::new(
                4,
                shard,
                Thing::Item(Item {
                    kind: "gold".into(),
                    count: 5,
                    x: 31,
                    y: 31,
                }),
            ),
        ]
    }

    #[test]
    fn the_file_format_matches_its_golden_file() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/forest-1000.scn.ron");
        let objects = examples();
        let text = write(&objects.iter().collect::<Vec<_>>(), &[]);
        if std::env::var_os("HOARD_BLESS").is_some() {
            std::fs::write(&path, &text).expect("bless");
        }
        let golden = std::fs::read_to_string(&path).expect("golden file (HOARD_BLESS=1 writes it)");
        assert_eq!(
            text, golden,
            "the world file format changed: update docs/MODDING.md and the golden file"
        );
        let file: Arc<Path> = Arc::from(path.as_path());
        let mut problems = Problems::default();
        let scene = parse(&file, &golden, &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        let parsed: Vec<_> = scene.objects.into_iter().map(|(id, thing, _)| (id, thing)).collect();
        let expected: Vec<_> = objects.into_iter().map(|o| (o.id, o.thing)).collect();
        assert_eq!(parsed, expected);
    }

    #[test]
    fn written_files_parse_back_to_the_same_objects() {
        let objects = [
            WorldObject::new(
                5,
                hoard_engine::ShardId(1000),
                Thing::Item(Item {
                    kind: "gold".into(),
                    count: 2,
                    x: 1,
                    y: 2,
                }),
            ),
            WorldObject::new(
                6,
                hoard_engine::ShardId(1000),
                Thing::Zone(ZoneInfo {
                    index: 1,
                    east: Some("forest".into()),
                    ..ZoneInfo::default()
                }),
            ),
        ];
        let text = write(&objects.iter().collect::<Vec<_>>(), &[9]);
        let file: Arc<Path> = Arc::from(Path::new("x"));
        let mut problems = Problems::default();
        let scene = parse(&file, &text, &mut problems);
        assert!(problems.is_empty(), "{problems:?}\n{text}");
        let things: Vec<_> = scene.objects.iter().map(|(id, t, _)| (*id, t.clone())).collect();
        assert_eq!(
            things,
            vec![(5, objects[0].thing.clone()), (6, objects[1].thing.clone())]
        );
        assert_eq!(scene.removed.iter().map(|(id, _)| *id).collect::<Vec<_>>(), vec![9]);
    }
}
