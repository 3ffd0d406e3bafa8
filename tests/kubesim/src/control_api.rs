//! The `/_sim/` HTTP control API: the same knobs as `Control`, for a person
//! or a script driving the `kubesim` binary with curl.
//!
//! | method and path | body | effect |
//! |---|---|---|
//! | GET `/_sim/requests` | | the request log (JSON array of RequestRecord) |
//! | GET `/_sim/counters` | | `{"<verb> <resource>": n}` |
//! | GET `/_sim/controller` | | `{"passes": n}`: how often the controllers looked at the store |
//! | POST `/_sim/reset` | | clears the log and all faults |
//! | POST `/_sim/image-faults` | `{"pattern": "*:bad-*", "fault": "ImagePullBackOff"}` | adds an image fault |
//! | DELETE `/_sim/image-faults` | | clears image faults |
//! | POST `/_sim/api-faults` | `{"verb": "get", "resource": "pods", "rate": 0.5, "code": 503}` | adds an error rate |
//! | DELETE `/_sim/api-faults` | | clears API faults, latency, outage |
//! | POST `/_sim/latency` | `{"millis": 200}` | adds latency to every request |
//! | POST `/_sim/outage` | `{"seconds": 5}` | 503 for every request for that long |
//! | POST `/_sim/drop-watches` | | ends every open watch |
//! | POST `/_sim/expire` | | watches resuming from older versions get 410 |
//! | POST `/_sim/rollout` | `{"seconds": 2}` | sets the rollout time |

use crate::control::Control;
use crate::faults::{ApiFault, ImageFault};
use crate::server::{Body, json_reply};
use hyper::Response;
use serde_json::{Value, json};
use std::time::Duration;

fn bad(msg: impl Into<String>) -> Response<Body> {
    json_reply(400, &json!({"error": msg.into()}))
}

fn ok() -> Response<Body> {
    json_reply(200, &json!({"ok": true}))
}

fn seconds(body: &Value, key: &str) -> Option<f64> {
    body[key].as_f64()
}

/// Handles `/_sim/<rest>`.
pub fn handle(control: &Control, method: &str, rest: &str, body: &[u8]) -> Response<Body> {
    let body: Value = if body.is_empty() {
        Value::Null
    } else {
        match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => return bad(format!("body is not JSON: {e}")),
        }
    };
    match (method, rest.trim_end_matches('/')) {
        ("GET", "requests") => json_reply(200, &json!(control.requests())),
        ("GET", "counters") => json_reply(200, &json!(control.counters())),
        ("GET", "controller") => json_reply(200, &json!({"passes": control.controller_passes()})),
        ("POST", "reset") => {
            control.reset();
            ok()
        }
        ("GET", "image-faults") => json_reply(200, &json!(control.image_faults())),
        ("POST", "image-faults") => {
            let (Some(pattern), Some(fault)) = (body["pattern"].as_str(), body["fault"].as_str())
            else {
                return bad("expected {\"pattern\": \"*:bad-*\", \"fault\": \"ImagePullBackOff\"}");
            };
            match fault.parse::<ImageFault>() {
                Ok(f) => {
                    control.set_image_fault(pattern, f);
                    ok()
                }
                Err(e) => bad(e),
            }
        }
        ("DELETE", "image-faults") => {
            control.clear_image_faults();
            ok()
        }
        ("GET", "api-faults") => json_reply(200, &json!(control.api_faults())),
        ("POST", "api-faults") => match serde_json::from_value::<ApiFault>(body) {
            Ok(f) if matches!(f.code, 429 | 500 | 503) => {
                control.add_api_fault(f);
                ok()
            }
            Ok(f) => bad(format!("code {} is not one of 429, 500, 503", f.code)),
            Err(e) => bad(format!("expected an ApiFault: {e}")),
        },
        ("DELETE", "api-faults") => {
            control.clear_api_faults();
            ok()
        }
        ("POST", "latency") => match body["millis"].as_u64() {
            Some(ms) => {
                control.set_latency(Duration::from_millis(ms));
                ok()
            }
            None => bad("expected {\"millis\": N}"),
        },
        ("POST", "outage") => match seconds(&body, "seconds") {
            Some(s) if s >= 0.0 => {
                control.outage(Duration::from_secs_f64(s));
                ok()
            }
            _ => bad("expected {\"seconds\": N}"),
        },
        ("POST", "drop-watches") => {
            control.drop_watches();
            ok()
        }
        ("POST", "expire") => {
            control.expire_resource_versions();
            ok()
        }
        ("POST", "rollout") => match seconds(&body, "seconds") {
            Some(s) if s >= 0.0 => {
                control.set_rollout_time(Duration::from_secs_f64(s));
                ok()
            }
            _ => bad("expected {\"seconds\": N}"),
        },
        _ => json_reply(
            404,
            &json!({"error": format!("no control endpoint {method} /_sim/{rest}")}),
        ),
    }
}
