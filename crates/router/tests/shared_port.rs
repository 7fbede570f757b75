//! The shared HTTP port: routing by `Host`, unknown names, per-app wake behaviour.
mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aegis_router::{PortRoute, Protocol, Resolver, Target};
use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};

struct Names(HashMap<String, Target>);

impl Resolver for Names {
    fn resolve(&self, name: &str) -> Option<Target> {
        self.0.get(name).cloned()
    }
}

#[tokio::test]
async fn requests_are_routed_by_host() {
    init_tracing();
    let web = http_app().await;
    let api = http_app().await;
    let rpc = grpc_app().await;
    let web_up = TestUpstream::asleep(Duration::from_millis(200));
    let api_up = TestUpstream::awake();
    let rpc_up = TestUpstream::asleep(Duration::from_millis(100));
    let mut names = HashMap::new();
    names.insert(
        "web".to_string(),
        Target::new(web_up.clone(), PortRoute::new(web.port, Protocol::Http)),
    );
    names.insert(
        "api".to_string(),
        Target::new(api_up.clone(), PortRoute::new(api.port, Protocol::Http)),
    );
    names.insert(
        "rpc".to_string(),
        Target::new(rpc_up.clone(), PortRoute::new(rpc.port, Protocol::Grpc)),
    );
    let router = Router::shared(Arc::new(Names(names))).await;
    let mut client = h1_client(router.addr).await;

    let host_get = |host: &str| {
        hyper::Request::get("/")
            .header("host", host)
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    let port = router.addr.port();
    for host in [
        format!("web.localhost:{port}"),
        "WEB".to_string(),
        "web.localhost.".into(),
    ] {
        let resp = client.send_request(host_get(&host)).await.unwrap();
        assert_eq!(resp.status(), 200, "{host}");
        assert_eq!(resp.headers()["x-seen-host"], host.as_str());
        body_string(resp).await;
    }
    assert_eq!(web_up.wakes(), 1);
    let resp = client
        .send_request(host_get(&format!("api:{port}")))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    body_string(resp).await;
    assert_eq!(api_up.connects(), 1);
    assert_eq!(
        web_up.connects(),
        1,
        "one upstream connection per client connection"
    );

    let resp = client
        .send_request(host_get("nope.localhost"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let body = body_string(resp).await;
    assert!(
        body.contains("\"nope\"") && !body.contains("web") && !body.contains("api"),
        "{body}"
    );
    let resp = client
        .send_request(host_get(&format!("127.0.0.1:{port}")))
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    body_string(resp).await;

    // A gRPC app by name, over HTTP/2 with prior knowledge on the same port.
    let mut h2 = h2_client(router.addr).await;
    let req = hyper::Request::post(format!("http://rpc.localhost:{port}/test.Echo/Say"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(grpc_frame(b"by name")))
        .unwrap();
    let resp = h2.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let collected = resp.into_body().collect().await.unwrap();
    assert_eq!(collected.trailers().unwrap()["grpc-status"], "0");
    assert_eq!(collected.to_bytes(), grpc_frame(b"by name"));
    assert_eq!(rpc_up.wakes(), 1);

    // Each app's activity is counted while the client connection to it is open.
    assert_eq!(web_up.open_connections(), 1);
    assert_eq!(api_up.open_connections(), 1);
    drop(client);
    drop(h2);
    eventually(Duration::from_secs(2), || {
        web_up.open_connections() + api_up.open_connections() + rpc_up.open_connections() == 0
    })
    .await;
}
