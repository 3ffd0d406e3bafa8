//! The cloud controller's visible effect: Services of type LoadBalancer and
//! Ingresses get an address in `status.loadBalancer.ingress`, so waits such
//! as kube's `is_service_loadbalancer_provisioned` finish.

use super::{Controller, Types, md};
use crate::store::Store;
use serde_json::{Value, json};

/// A stable address per object in the range MetalLB-style setups use.
fn address_for(obj: &Value) -> String {
    let name = format!("{}/{}", md(obj, "namespace"), md(obj, "name"));
    let h = name
        .bytes()
        .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(b as u32));
    format!("172.18.255.{}", h % 250 + 2)
}

impl Controller {
    pub(super) fn load_balancers(&mut self, store: &mut Store, t: &Types) {
        for svc in store.all_of(&t.svc.key()) {
            if svc["spec"]["type"] != "LoadBalancer"
                || svc["status"]["loadBalancer"]["ingress"].is_array()
            {
                continue;
            }
            let mut status = svc["status"].clone();
            if !status.is_object() {
                status = json!({});
            }
            status["loadBalancer"] =
                json!({"ingress": [{"ip": address_for(&svc), "ipMode": "VIP"}]});
            Self::write_status(store, &t.svc, &svc, status, "cloud-controller-manager");
        }
        for ing in store.all_of(&t.ing.key()) {
            if ing["status"]["loadBalancer"]["ingress"].is_array() {
                continue;
            }
            let status = json!({"loadBalancer": {"ingress": [{"ip": address_for(&ing)}]}});
            Self::write_status(store, &t.ing, &ing, status, "ingress-controller");
        }
    }
}
