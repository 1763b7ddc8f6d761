//! Chat: a player says a line (the `say` intent) and everyone following
//! the zone they stand in hears it (the `chat` server message). The smallest
//! use of a game's messages to its players: not stored, sent after the
//! frame's changes, refused with a reason when it cannot be said.

use std::collections::HashMap;

use bevy_ecs::prelude::*;
use hoard_bevy::{Audience, FromClient, IntentOutcomes, ToClients};
use serde::{Deserialize, Serialize};

use super::presence::ZoneNames;
use super::rules::{Players, refusal};

/// The intent kind of a chat line.
pub(crate) const SAY: &str = "say";
/// The server message kind of a chat line heard.
pub(crate) const CHAT: &str = "chat";
/// Longest chat line, in bytes.
pub(crate) const MAX_LINE: usize = 200;
/// Lines a player may say a second, and at once.
const RATE: (f32, f32) = (1.0, 3.0);

/// What a player says.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub(crate) struct Say {
    /// The line.
    pub(crate) text: String,
}

/// A line heard in a zone.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub(crate) struct Chat {
    /// Who said it.
    pub(crate) from: String,
    /// The line.
    pub(crate) text: String,
}

/// Each player's chat tokens and when they were last counted (seconds of
/// the server's clock).
#[derive(Resource, Default)]
pub(crate) struct ChatBuckets(HashMap<String, (f32, f64)>);

/// Passes each line said on to the players of the speaker's zone.
pub(crate) fn chat(
    mut said: MessageReader<FromClient<Say>>,
    mut outcomes: ResMut<IntentOutcomes>,
    mut heard: MessageWriter<ToClients<Chat>>,
    mut buckets: ResMut<ChatBuckets>,
    (players, names): (Res<Players>, Res<ZoneNames>),
    (time, rate): (Res<super::rules::Tick>, Res<super::rules::TickRate>),
) {
    let now = time.0 as f64 / f64::from(rate.0.max(1));
    for FromClient {
        perspective,
        intent,
        id,
    } in said.read()
    {
        let text = intent.text.trim();
        if text.is_empty() || text.len() > MAX_LINE {
            outcomes.refuse(*id, refusal::NOT_HERE, format!("a chat line is 1 to {MAX_LINE} bytes"));
            continue;
        }
        let Some(zone) = players.0.get(perspective).and_then(|(z, ..)| names.0.get(z)) else {
            outcomes.refuse(*id, refusal::NOWHERE, "you are in no zone yet: move first");
            continue;
        };
        let (tokens, last) = buckets.0.entry(perspective.clone()).or_insert((RATE.1, now));
        *tokens = (*tokens + (now - *last) as f32 * RATE.0).min(RATE.1);
        *last = now;
        if *tokens < 1.0 {
            outcomes.refuse(*id, refusal::TOO_FAST, "you are talking too fast; slow down");
            continue;
        }
        *tokens -= 1.0;
        heard.write(ToClients {
            to: Audience::Zone(zone.clone()),
            message: Chat {
                from: perspective.clone(),
                text: text.to_owned(),
            },
        });
    }
}
