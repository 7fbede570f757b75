//! WebSocket ports: the upgrade is held during a wake, then both sides are spliced; the
//! socket counts as activity for as long as it is open.
mod common;

use std::time::Duration;

use aegis_router::Protocol;
use common::*;
use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn echo_over_a_socket_opened_during_the_wake() {
    init_tracing();
    let app = websocket_app().await;
    let up = TestUpstream::asleep(Duration::from_millis(300));
    let router = Router::port(
        up.clone(),
        route(app.port, Protocol::Websocket, Duration::from_secs(5)),
    )
    .await;
    let (mut ws, resp) = tokio_tungstenite::connect_async(format!("ws://{}/chat", router.addr))
        .await
        .expect("the upgrade is held, then proxied");
    assert_eq!(resp.status(), 101);
    assert_eq!(up.wakes(), 1);

    for i in 0..5 {
        ws.send(Message::text(format!("hello {i}"))).await.unwrap();
        let got = ws.next().await.unwrap().unwrap();
        assert_eq!(got, Message::text(format!("hello {i}")));
    }
    let big = vec![7u8; 200_000];
    ws.send(Message::binary(big.clone())).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::binary(big));

    // An open socket is activity, and reports its traffic.
    assert_eq!(up.open_connections(), 1);
    assert!(up.touches() >= 1);
    ws.close(None).await.unwrap();
    while let Some(Ok(_)) = ws.next().await {}
    drop(ws);
    eventually(Duration::from_secs(2), || up.open_connections() == 0).await;
}

#[tokio::test]
async fn an_http_port_also_upgrades_but_holds_instead_of_a_loading_page() {
    let app = websocket_app().await;
    let up = TestUpstream::asleep(Duration::from_millis(100));
    let router = Router::port(
        up.clone(),
        route(app.port, Protocol::Http, Duration::from_secs(5)),
    )
    .await;
    // Browsers send `Accept: text/html`-less upgrades, but make sure an upgrade is never
    // answered with the page even if it claims to accept HTML.
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        format!("ws://{}/", router.addr),
    )
    .unwrap();
    req.headers_mut()
        .insert("accept", "text/html".parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    ws.send(Message::text("x")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("x"));
}
