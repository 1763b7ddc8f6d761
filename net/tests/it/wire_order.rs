//! The server's answer to `Hello`, as the QUIC clients take it. The QUIC
//! wire (the Bevy client plugin's transport) hands its driver that answer
//! before anything from the server's other streams, even when one of those
//! arrived first — as an answer stream opened right after `Welcome` (a
//! 0-RTT entry answered at once) can on a busy machine: a driver that read
//! the answer stream's `AnswerBegin` first would take it for the answer to
//! `Hello` and give up. And a server that never answers fails the async
//! client's connect in time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hoard_client::wire::{Arrival, WireTransport};
use hoard_engine::ZoneId;
use hoard_net::quic::client::{ClientError, ClientOptions, HoardClient};
use hoard_net::quic::wire::QuicWireTransport;
use hoard_proto::wire::{ALPN, AnswerBegin, Hello, Message, PROTOCOL_VERSION, Welcome};
use hoard_trust::tls::ServerKeys;

/// A server that, once the client's control stream opens, sends an answer
/// stream and waits until the client has acknowledged all of it, and only
/// then writes `Welcome` on the control stream.
async fn answer_stream_before_welcome(endpoint: quinn::Endpoint, identity: [u8; 32]) {
    let conn = endpoint.accept().await.expect("a client").await.expect("handshake");
    let (mut control, _hello) = conn.accept_bi().await.expect("the control stream");
    let mut answer = conn.open_uni().await.expect("uni");
    let begin = AnswerBegin {
        request: 1,
        zone: ZoneId::new("meadow").expect("zone"),
        shards: 0,
    };
    answer
        .write_all(&Message::AnswerBegin(begin).to_frame())
        .await
        .expect("write");
    answer.finish().expect("finish");
    // Resolves once the client acknowledged the whole stream: it has it.
    answer.stopped().await.expect("acknowledged");
    let welcome = Welcome {
        protocol: PROTOCOL_VERSION,
        server: identity,
        perspective: "ann".into(),
        zones: Vec::new(),
        tick_hz: 20,
        world_key: Vec::new(),
        token_keys: None,
    };
    control
        .write_all(&Message::Welcome(welcome).to_frame())
        .await
        .expect("write");
    conn.closed().await;
}

/// A raw QUIC endpoint with a world's keys, on loopback.
fn raw_server(keys: &ServerKeys) -> quinn::Endpoint {
    assert_eq!(ALPN, b"hoard/1");
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(keys.rustls_config().expect("tls")).expect("quic");
    quinn::Endpoint::server(
        quinn::ServerConfig::with_crypto(Arc::new(crypto)),
        "127.0.0.1:0".parse().expect("addr"),
    )
    .expect("endpoint")
}

#[test]
fn the_answer_to_hello_comes_before_what_the_other_streams_carry() {
    let data = tempfile::tempdir().expect("tempdir");
    let cache = tempfile::tempdir().expect("tempdir");
    let keys = ServerKeys::load_or_create(data.path()).expect("keys");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let endpoint = runtime.block_on(async { raw_server(&keys) });
    let addr = endpoint.local_addr().expect("addr");
    let server = runtime.spawn(answer_stream_before_welcome(endpoint, keys.identity.0));

    let options = ClientOptions::new(addr, cache.path().to_owned(), "token".into()).with_pin(keys.identity);
    let mut connecting = QuicWireTransport::new(options).connect(Hello {
        protocol: PROTOCOL_VERSION,
        registry: [0; 32],
        service: String::new(),
        token: "token".into(),
        codecs: Vec::new(),
        token_keys: false,
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let wire = loop {
        if let Some(wire) = connecting.poll() {
            break wire.expect("connected");
        }
        assert!(Instant::now() < deadline, "the connection opens");
        std::thread::sleep(Duration::from_millis(2));
    };
    let mut arrivals = Vec::new();
    while arrivals.len() < 2 {
        let room = 2 - arrivals.len();
        wire.receive(&mut arrivals, room);
        assert!(Instant::now() < deadline, "both messages arrive; so far {arrivals:?}");
        std::thread::sleep(Duration::from_millis(2));
    }
    let kinds: Vec<u8> = arrivals
        .iter()
        .map(|a| match a {
            Arrival::Message(inbound) => inbound.msg.kind(),
            Arrival::Ended(e) => panic!("the connection ended: {e}"),
        })
        .collect();
    assert_eq!(
        kinds,
        vec![0x81, 0x90],
        "Welcome first, then the answer stream's AnswerBegin"
    );
    drop(wire);
    server.abort();
}

/// A server that takes the connection and `Hello` but never answers: the
/// async client's connect fails once `welcome_timeout` has passed, saying
/// so, rather than waiting for ever (the connection stays alive with QUIC
/// keep-alives, so no idle timeout would end it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_never_answers_hello_fails_the_connect_in_time() {
    let data = tempfile::tempdir().expect("tempdir");
    let cache = tempfile::tempdir().expect("tempdir");
    let keys = ServerKeys::load_or_create(data.path()).expect("keys");
    let endpoint = raw_server(&keys);
    let addr = endpoint.local_addr().expect("addr");
    let server = tokio::spawn(async move {
        let conn = endpoint.accept().await.expect("a client").await.expect("handshake");
        let _control = conn.accept_bi().await.expect("the control stream");
        conn.closed().await
    });
    let mut options = ClientOptions::new(addr, cache.path().to_owned(), "dev:ann".into()).with_pin(keys.identity);
    options.welcome_timeout = Duration::from_millis(300);
    let registry = hoard_engine::PublishRegistry::builder().build();
    let started = Instant::now();
    let outcome = tokio::time::timeout(Duration::from_secs(20), HoardClient::connect(options, registry))
        .await
        .expect("the connect ends");
    match outcome {
        Err(ClientError::Connect { detail, .. }) => assert!(detail.contains("did not answer Hello"), "{detail}"),
        other => panic!("expected a connect error, got {:?}", other.map(|_| "a client")),
    }
    assert!(started.elapsed() >= Duration::from_millis(300), "it waited its time");
    // The client closed the connection it gave up on.
    let closed = tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the server sees the close")
        .expect("server task");
    assert!(
        matches!(closed, quinn::ConnectionError::ApplicationClosed(_)),
        "{closed:?}"
    );
}
