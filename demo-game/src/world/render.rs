//! Draws a zone as a picture: terrain in its colours, houses as filled
//! rectangles in their own colour with a dark outline, items as bright dots.
//! `scale` pixels per tile.

use std::io::BufWriter;
use std::path::Path;

use anyhow::Context;
use hoard_engine::ZoneId;

use super::{Thing, WorldData};
use crate::game::{ZONE_SIZE, tile};

/// An RGB picture.
pub(crate) struct Picture {
    /// Width in pixels.
    pub(crate) width: u32,
    /// Height in pixels.
    pub(crate) height: u32,
    /// Row-major RGB bytes.
    pub(crate) rgb: Vec<u8>,
}

impl Picture {
    fn fill(&mut self, x: u32, y: u32, w: u32, h: u32, colour: [u8; 3]) {
        for py in y..(y + h).min(self.height) {
            for px in x..(x + w).min(self.width) {
                let at = ((py * self.width + px) * 3) as usize;
                self.rgb[at..at + 3].copy_from_slice(&colour);
            }
        }
    }

    /// The colour of pixel (x, y).
    #[cfg(test)]
    pub(crate) fn pixel(&self, x: u32, y: u32) -> [u8; 3] {
        let at = ((y * self.width + x) * 3) as usize;
        [self.rgb[at], self.rgb[at + 1], self.rgb[at + 2]]
    }
}

/// The colour of a tile kind.
pub(crate) fn tile_colour(kind: u8) -> [u8; 3] {
    match kind {
        tile::GRASS => [110, 170, 80],
        tile::WATER => [50, 100, 190],
        tile::SAND => [220, 200, 140],
        tile::ROCK => [130, 125, 120],
        tile::FOREST => [40, 110, 50],
        _ => [150, 120, 90],
    }
}

/// The colour items are drawn in.
pub(crate) const ITEM_COLOUR: [u8; 3] = [255, 230, 40];

/// Draws `zone` of `world`; `progress` gets (layers done, layers).
pub(crate) fn render(
    world: &WorldData,
    zone: &ZoneId,
    scale: u32,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> anyhow::Result<Picture> {
    anyhow::ensure!((1..=16).contains(&scale), "--scale must be 1 to 16, got {scale}");
    anyhow::ensure!(
        world.zones.contains_key(zone),
        "no zone {zone}; the zones are {}",
        world.zones.keys().map(ZoneId::as_str).collect::<Vec<_>>().join(", ")
    );
    let side = u32::from(ZONE_SIZE) * scale;
    let mut picture = Picture {
        width: side,
        height: side,
        rgb: vec![0; (side * side * 3) as usize],
    };
    let objects: Vec<_> = world.objects_in_zone(zone).collect();
    for object in &objects {
        if let Thing::Terrain(row) = &object.thing {
            for (i, kind) in row.tiles.iter().enumerate() {
                let x = u32::from(row.x) + i as u32;
                picture.fill(x * scale, u32::from(row.y) * scale, scale, scale, tile_colour(*kind));
            }
        }
    }
    progress(1, 3);
    for object in &objects {
        if let Thing::House(house) = &object.thing {
            let (x, y) = (u32::from(house.x) * scale, u32::from(house.y) * scale);
            let (w, h) = (u32::from(house.size.0) * scale, u32::from(house.size.1) * scale);
            picture.fill(x, y, w, h, [20, 20, 20]);
            let (r, g, b) = house.colour;
            let inset = u32::from(scale > 2);
            let (iw, ih) = (w.saturating_sub(2 * inset), h.saturating_sub(2 * inset));
            picture.fill(x + inset, y + inset, iw, ih, [r, g, b]);
        }
    }
    progress(2, 3);
    for object in &objects {
        if let Thing::Item(item) = &object.thing {
            let dot = scale.div_ceil(2);
            let offset = (scale - dot) / 2;
            let (x, y) = (u32::from(item.x) * scale + offset, u32::from(item.y) * scale + offset);
            picture.fill(x, y, dot, dot, ITEM_COLOUR);
        }
    }
    progress(3, 3);
    Ok(picture)
}

/// Writes `picture` as a PNG file.
pub(crate) fn write_png(picture: &Picture, path: &Path) -> anyhow::Result<()> {
    let file = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut encoder = png::Encoder::new(BufWriter::new(file), picture.width, picture.height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().context("writing the PNG header")?;
    writer.write_image_data(&picture.rgb).context("writing the PNG")?;
    writer.finish().context("finishing the PNG")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::world::generate::{GenerateOptions, generate};

    #[test]
    fn the_picture_shows_each_tile_house_and_item_in_place() {
        let world = generate(&GenerateOptions {
            zones: 1,
            objects_per_zone: 60,
            seed: 5,
        })
        .expect("generate");
        let zone = ZoneId::new("meadow").expect("zone");
        let picture = render(&world, &zone, 4, &|_, _| {}).expect("render");
        assert_eq!((picture.width, picture.height), (1024, 1024));
        for object in world.objects_in_zone(&zone) {
            match &object.thing {
                Thing::Item(item) => {
                    let centre = picture.pixel(u32::from(item.x) * 4 + 2, u32::from(item.y) * 4 + 2);
                    assert_eq!(centre, ITEM_COLOUR, "item {} at {},{}", object.id, item.x, item.y);
                }
                Thing::Terrain(row) if row.y == 128 => {
                    // The road: no house or item sits on it in a generated world.
                    assert_eq!(picture.pixel(0, 128 * 4), tile_colour(row.tiles[0]));
                }
                _ => {}
            }
        }
        let path = tempfile::tempdir().expect("dir");
        let file = path.path().join("zone.png");
        write_png(&picture, &file).expect("png");
        let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&file).expect("open")));
        let info = decoder.read_info().expect("a PNG").info().clone();
        assert_eq!((info.width, info.height), (1024, 1024));
    }
}
