//! The kubelet's side: each pod's status from its age, the rollout time and
//! the image faults (decided in `pod`), and the Events it records.

use super::{Controller, Types, md, pod, record_event, terminating};
use crate::faults::ImageFaultRule;
use crate::store::Store;
use std::collections::HashSet;
use std::time::{Duration, Instant};

impl Controller {
    pub(super) fn pods(
        &mut self,
        store: &mut Store,
        t: &Types,
        faults: &[ImageFaultRule],
        unit: Duration,
        scale: f64,
    ) {
        let all = store.all_of(&t.pod.key());
        let live: HashSet<&str> = all.iter().map(|p| md(p, "uid")).collect();
        self.pod_born.retain(|uid, _| live.contains(uid.as_str()));
        self.pod_ips.retain(|uid, _| live.contains(uid.as_str()));
        for p in &all {
            let phase = p["status"]["phase"].as_str().unwrap_or("");
            if phase == "Succeeded" || phase == "Failed" || terminating(p) {
                continue;
            }
            let uid = md(p, "uid").to_string();
            let (born, wall) = *self
                .pod_born
                .entry(uid.clone())
                .or_insert_with(|| (Instant::now(), chrono::Utc::now()));
            let next = &mut self.next_ip;
            let ip = self
                .pod_ips
                .entry(uid)
                .or_insert_with(|| {
                    *next += 1;
                    format!("10.244.{}.{}", (*next / 250) % 250, *next % 250 + 2)
                })
                .clone();
            let runs_to_completion = p["metadata"]["ownerReferences"]
                .as_array()
                .is_some_and(|r| r.iter().any(|o| o["kind"] == "Job"));
            let clock = pod::PodClock {
                elapsed: born.elapsed(),
                unit,
                time_scale: scale,
                created: wall,
                faults,
                runs_to_completion,
                pod_ip: &ip,
            };
            let status = pod::pod_status(p, &clock);
            if let Some(age) = pod::next_change(p, &clock) {
                self.due(born + age);
            }
            for (reason, type_, message) in pod::transitions(&p["status"], &status, md(p, "name")) {
                record_event(
                    store, &t.event, p, "Pod", type_, reason, &message, "kubelet",
                );
            }
            Self::write_status(store, &t.pod, p, status, "kubelet");
        }
    }
}
