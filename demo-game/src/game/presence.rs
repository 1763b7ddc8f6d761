//! Who stands where: players' positions are transient — never stored, never
//! published — and reach the other players in the same zone as hoard's
//! transient zone state, one list per zone, sent when it changes.

use std::collections::{BTreeMap, HashMap};

use bevy_ecs::prelude::*;
use hoard_engine::ZoneId;
use hoard_proto::intents::ConnectedPlayers;
use serde::{Deserialize, Serialize};

use super::rules::Players;

/// The zones' names by index.
#[derive(Resource, Default)]
pub(crate) struct ZoneNames(pub(crate) HashMap<u32, ZoneId>);

/// The players in one zone: (name, x, y), by name.
#[derive(Serialize, Deserialize, Debug, Default, Clone, PartialEq)]
pub(crate) struct Presence(pub(crate) Vec<(String, u16, u16)>);

impl Presence {
    /// Decodes a zone's transient state; an undecodable one shows nobody.
    pub(crate) fn decode(bytes: &[u8]) -> Presence {
        rmp_serde::from_slice(bytes).unwrap_or_default()
    }
}

/// Forgets the position of every player without a session, so they are
/// no longer shown and may start afresh when they come back.
pub(crate) fn forget_departed(connected: Option<Res<ConnectedPlayers>>, mut players: ResMut<Players>) {
    if let Some(connected) = connected {
        players.0.retain(|name, _| connected.contains(name));
    }
}

/// Every zone's presence list (empty ones too, so the last player leaving
/// a zone is seen to go): the server's transient hook.
pub(crate) fn presence(world: &mut World) -> Vec<(ZoneId, Vec<u8>)> {
    let mut by_zone: BTreeMap<u32, Presence> = world
        .resource::<ZoneNames>()
        .0
        .keys()
        .map(|index| (*index, Presence::default()))
        .collect();
    for (name, (zone, x, y)) in &world.resource::<Players>().0 {
        if let Some(list) = by_zone.get_mut(zone) {
            list.0.push((name.clone(), *x, *y));
        }
    }
    let names = &world.resource::<ZoneNames>().0;
    by_zone
        .into_iter()
        .filter_map(|(index, mut list)| {
            list.0.sort();
            Some((names.get(&index)?.clone(), rmp_serde::to_vec(&list).ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_zone_lists_its_connected_players_and_departed_ones_are_forgotten() {
        let mut world = World::new();
        world.insert_resource(ZoneNames(HashMap::from([
            (0, ZoneId::new("meadow").expect("zone")),
            (1, ZoneId::new("forest").expect("zone")),
        ])));
        world.insert_resource(Players(HashMap::from([
            ("bob".to_owned(), (0, 5, 6)),
            ("ann".to_owned(), (0, 1, 2)),
            ("cleo".to_owned(), (1, 9, 9)),
        ])));
        world.insert_resource(ConnectedPlayers(BTreeMap::from([
            ("ann".to_owned(), 1),
            ("cleo".to_owned(), 1),
        ])));
        let decode = |out: &[(ZoneId, Vec<u8>)], zone: &str| {
            let (_, bytes) = out.iter().find(|(z, _)| z.as_str() == zone).expect("zone listed");
            Presence::decode(bytes).0
        };
        let before = presence(&mut world);
        assert_eq!(
            decode(&before, "meadow"),
            vec![("ann".to_owned(), 1, 2), ("bob".to_owned(), 5, 6)]
        );
        let mut schedule = Schedule::default();
        schedule.add_systems(forget_departed);
        schedule.run(&mut world);
        let after = presence(&mut world);
        assert_eq!(decode(&after, "meadow"), vec![("ann".to_owned(), 1, 2)], "bob left");
        assert_eq!(decode(&after, "forest"), vec![("cleo".to_owned(), 9, 9)]);
    }

    /// The bytes docs/PROTOCOL.md ("The demo game", who stands where) gives
    /// a client written in another language.
    #[test]
    fn a_zones_presence_is_the_documented_list() {
        let ann = Presence(vec![("ann".to_owned(), 128, 130)]);
        let bytes = rmp_serde::to_vec(&ann).expect("encode");
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "9193a3616e6ecc80cc82");
        assert_eq!(Presence::decode(&bytes), ann);
    }
}
