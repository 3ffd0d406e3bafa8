//! What verify reaches besides the cluster: a gateway whose preview rule
//! (the `x-maily-slot` header) answers per slot, Ethereum and Polygon
//! JSON-RPC nodes, and the profile's queues declared on the real RabbitMQ.

use amqprs::channel::QueueDeclareArguments;
use amqprs::connection::{Connection, OpenConnectionArguments};
use serde_json::json;
use wiremock::matchers::{body_partial_json, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use super::World;

/// The queues the shipped profiles' `verify.queues` name.
pub const QUEUES: [&str; 3] = ["email.send", "campaigns.schedule", "analytics.events"];

pub struct Stubs {
    pub gateway: MockServer,
    pub ethereum: MockServer,
    pub polygon: MockServer,
}

/// A gateway whose preview rule answers per slot, and two chain nodes.
pub fn stubs(world: &World, blue: &str, green: &str, polygon_code: &str) -> Stubs {
    world.rt.block_on(async {
        let gateway = MockServer::start().await;
        for (slot, version) in [("blue", blue), ("green", green)] {
            for p in [
                "/health",
                "/webhooks/health",
                "/t/health",
                "/campaigns/health",
                "/blockchain-verifier/health",
                "/ai/health",
            ] {
                Mock::given(method("GET"))
                    .and(path(p))
                    .and(header("x-maily-slot", slot))
                    .respond_with(
                        ResponseTemplate::new(200)
                            .set_body_json(json!({"status": "ok", "version": version})),
                    )
                    .mount(&gateway)
                    .await;
            }
            Mock::given(method("GET"))
                .and(path("/api/v1/version"))
                .and(header("x-maily-slot", slot))
                .respond_with(
                    ResponseTemplate::new(200)
                        .set_body_json(json!({"service": "api", "version": version})),
                )
                .mount(&gateway)
                .await;
        }
        let node = |chain: &'static str, code: String| async move {
            let s = MockServer::start().await;
            Mock::given(method("POST"))
                .and(body_partial_json(json!({"method": "eth_chainId"})))
                .respond_with(
                    ResponseTemplate::new(200)
                        .set_body_json(json!({"jsonrpc": "2.0", "id": 1, "result": chain})),
                )
                .mount(&s)
                .await;
            Mock::given(method("POST"))
                .and(body_partial_json(json!({"method": "eth_getCode"})))
                .respond_with(
                    ResponseTemplate::new(200)
                        .set_body_json(json!({"jsonrpc": "2.0", "id": 1, "result": code})),
                )
                .mount(&s)
                .await;
            s
        };
        let ethereum = node("0x1", "0x6080604052".into()).await;
        let polygon = node("0x89", polygon_code.to_string()).await;
        Stubs {
            gateway,
            ethereum,
            polygon,
        }
    })
}

pub fn declare_queues(world: &World, vhost_url: &str) {
    world.rt.block_on(async {
        let conn = Connection::open(&OpenConnectionArguments::try_from(vhost_url).unwrap())
            .await
            .unwrap();
        let ch = conn.open_channel(None).await.unwrap();
        for q in QUEUES {
            ch.queue_declare(QueueDeclareArguments::durable_client_named(q))
                .await
                .unwrap();
        }
        let _ = ch.close().await;
        let _ = conn.close().await;
    });
}
