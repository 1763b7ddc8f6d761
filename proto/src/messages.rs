//! Messages of the game to its players: typed, registered by name like
//! intents, sent to one player, to everyone in a zone, or to everyone, on
//! the delta stream. Not stored: a message goes out right after the deltas
//! of the frame that wrote it, once they are durable (so a player told "your
//! house is built" already has the house), in the order written, bounded as
//! deltas are (a player who does not read them is a slow consumer).

use bevy_ecs::resource::Resource;
use hoard_engine::ZoneId;

/// Who a game message goes to.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Audience {
    /// Every session of this player (perspective).
    Player(String),
    /// Every session following this zone.
    Zone(ZoneId),
    /// Every signed-in session.
    All,
}

/// One message written by the game this frame.
#[derive(Clone, Debug)]
pub struct OutgoingMessage {
    /// Its recipients.
    pub to: Audience,
    /// Its registered kind.
    pub kind: String,
    /// Its MessagePack encoding.
    pub payload: Vec<u8>,
}

/// The game's messages of this frame; the server's tick core takes them at
/// the end of the frame.
#[derive(Resource, Default, Debug)]
pub struct OutgoingMessages(pub Vec<OutgoingMessage>);

impl OutgoingMessages {
    /// Queues `message` of `kind` for `to`.
    pub fn send<T: serde::Serialize>(&mut self, to: Audience, kind: &str, message: &T) -> Result<(), String> {
        let payload = rmp_serde::to_vec(message).map_err(|e| format!("message {kind:?} does not encode: {e}"))?;
        self.0.push(OutgoingMessage {
            to,
            kind: kind.to_owned(),
            payload,
        });
        Ok(())
    }
}
