//! The WebTransport endpoint, reached as a browser reaches it: an HTTP/3
//! WebTransport session (web-transport-quinn's client, the development
//! certificate accepted by its SHA-256 as `serverCertificateHashes` does),
//! hoard's frames on the session's streams.

use std::path::Path;

use hoard_engine::ZoneId;
use hoard_net::quic::server::{ServerHandle, WEB_PATH, WebCertificate, WebTransportOptions};
use hoard_proto::wire::{EnterZone, ErrorCode, Hello, Intent, Message, PROTOCOL_VERSION, StreamDecoder};
use web_transport_quinn::{ClientBuilder, RecvStream, SendStream, Session};

use crate::e2e::{AddStones, registry, server_with};

async fn web_server(data: &Path) -> ServerHandle {
    server_with(data, 4, 3, |options| {
        options.web_transport = Some(WebTransportOptions {
            listen: "127.0.0.1:0".parse().expect("addr"),
            certificate: WebCertificate::Development,
        });
    })
    .await
}

async fn session(server: &ServerHandle, path: &str) -> Result<Session, web_transport_quinn::ClientError> {
    let web = server.web.as_ref().expect("a WebTransport endpoint");
    let hashes = web.certificate_hashes().iter().map(|h| h.to_vec()).collect();
    let client = ClientBuilder::new().with_server_certificate_hashes(hashes)?;
    let url = url::Url::parse(&format!("https://127.0.0.1:{}{path}", web.addr.port())).expect("url");
    client.connect(url).await
}

fn hello(server: &ServerHandle, player: &str) -> Message {
    Message::Hello(Hello {
        protocol: PROTOCOL_VERSION,
        registry: registry().hash().0,
        service: "world".into(),
        token: server
            .auth
            .issue(player, chrono::Utc::now().timestamp() + 3600)
            .expect("token"),
        codecs: Vec::new(),
        token_keys: false,
    })
}

fn meadow() -> ZoneId {
    ZoneId::new("meadow").expect("zone")
}

/// Reads a stream's messages one at a time.
struct Messages {
    recv: RecvStream,
    decoder: StreamDecoder,
}

impl Messages {
    fn new(recv: RecvStream) -> Messages {
        Messages {
            recv,
            decoder: StreamDecoder::bulk(),
        }
    }

    async fn next(&mut self) -> Option<Message> {
        loop {
            if let Some((msg, _)) = self.decoder.next_message().expect("valid frames") {
                return Some(msg);
            }
            match self.recv.read_chunk(64 * 1024, true).await {
                Ok(Some(chunk)) => self.decoder.push(&chunk.bytes),
                _ => return None,
            }
        }
    }
}

async fn send(control: &mut SendStream, msg: &Message) {
    control.write_all(&msg.to_frame()).await.expect("write");
}

/// Signs in over `session`; returns its control stream and the `Welcome`.
async fn sign_in(server: &ServerHandle, session: &Session, player: &str) -> (SendStream, Messages, Message) {
    let (mut control, recv) = session.open_bi().await.expect("control stream");
    send(&mut control, &hello(server, player)).await;
    let mut replies = Messages::new(recv);
    let welcome = replies.next().await.expect("a reply to Hello");
    (control, replies, welcome)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_session_enters_cold_with_signed_heads_and_gets_live_deltas() {
    let data = tempfile::tempdir().expect("tempdir");
    let server = web_server(data.path()).await;
    let web = server.web.as_ref().expect("endpoint");
    assert_ne!(web.addr.port(), server.addr.port(), "a port of its own");
    assert_eq!(web.certificate_hashes().len(), 1);

    let session = session(&server, WEB_PATH).await.expect("session");
    let (mut control, _replies, welcome) = sign_in(&server, &session, "ann").await;
    let Message::Welcome(welcome) = welcome else {
        panic!("expected Welcome, got {welcome:?}")
    };
    assert_eq!(welcome.server, server.identity.0);
    assert_eq!(welcome.perspective, "ann");

    send(
        &mut control,
        &Message::EnterZone(EnterZone {
            request: 1,
            zone: meadow(),
            subscribe: true,
            have: Vec::new(),
            held: Vec::new(),
            proofs: true,
        }),
    )
    .await;
    let mut answer = Messages::new(session.accept_uni().await.expect("answer stream"));
    let (mut snapshots, mut proofs, mut objects) = (0, 0, 0);
    loop {
        match answer.next().await.expect("the answer goes on to its end") {
            Message::AnswerBegin(begin) => assert_eq!(begin.request, 1),
            Message::Snapshot(s) => {
                snapshots += 1;
                objects += s.objects.len();
            }
            Message::HeadProof(_) => proofs += 1,
            Message::AnswerEnd(_) => break,
            other => panic!("unexpected {other:?} in a cold answer"),
        }
    }
    assert_eq!(
        (snapshots, proofs, objects),
        (4, 4, 12),
        "every shard whole, each with its signed head"
    );

    // An intent sent on the session is applied and its change comes back
    // on the session's delta stream.
    let payload = rmp_serde::to_vec_named(&AddStones { object: 2, stones: 5 }).expect("encode");
    send(
        &mut control,
        &Message::Intent(Intent {
            seq: 1,
            kind: "add_stones".into(),
            payload,
            signature: Vec::new(),
        }),
    )
    .await;
    let mut deltas = Messages::new(session.accept_uni().await.expect("delta stream"));
    let delta = loop {
        match deltas.next().await.expect("the delta stream stays open") {
            Message::Delta(delta) => break delta,
            _ => continue,
        }
    };
    assert_eq!(delta.zone, meadow());
    assert_eq!(delta.upserts.len(), 1, "one crate changed: {delta:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_to_another_path_is_refused_and_a_newer_sign_in_closes_the_older_with_its_reason() {
    let data = tempfile::tempdir().expect("tempdir");
    let server = web_server(data.path()).await;
    assert!(
        session(&server, "/elsewhere").await.is_err(),
        "only {WEB_PATH} is served"
    );

    let first = session(&server, WEB_PATH).await.expect("session");
    let (_c1, _r1, welcome) = sign_in(&server, &first, "bo").await;
    assert!(matches!(welcome, Message::Welcome(_)));
    let second = session(&server, WEB_PATH).await.expect("session");
    let (_c2, _r2, welcome) = sign_in(&server, &second, "bo").await;
    assert!(matches!(welcome, Message::Welcome(_)));
    // The browser sees the session closed with hoard's code and reason.
    match first.closed().await {
        web_transport_quinn::SessionError::WebTransportError(web_transport_quinn::WebTransportError::Closed(
            code,
            reason,
        )) => {
            assert_eq!(code, ErrorCode::TokenInUse as u32);
            assert!(reason.contains("signed in again"), "{reason}");
        }
        other => panic!("expected the session's close, got {other}"),
    }
}
