"""The official Kubernetes Python client against a cluster: kubesim or a real
kube-apiserver. Run by tests/controlplane/tests/differential.rs with Debian's
python3-kubernetes (scripts/setup.d/kubesim.sh installs it):

    /usr/bin/python3 python_client.py KUBECONFIG NAMESPACE

Prints one JSON summary of what the client saw; the Rust test expects the
same summary from both servers.
"""

import json
import sys
import threading

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException


def failure(e):
    """An ApiException as the Status body the server sent."""
    body = json.loads(e.body)
    return {
        "http": e.status,
        "kind": body.get("kind"),
        "status": body.get("status"),
        "reason": body.get("reason"),
        "code": body.get("code"),
        "message": body.get("message"),
        "details": body.get("details"),
    }


def config_map(name, labels, value):
    return client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name=name, labels=labels),
        data={"k": value},
    )


def main():
    kubeconfig, ns = sys.argv[1], sys.argv[2]
    config.load_kube_config(config_file=kubeconfig)
    v1 = client.CoreV1Api()
    out = {}

    out["list_before"] = sorted(
        cm.metadata.name for cm in v1.list_namespaced_config_map(ns).items
    )

    created = v1.create_namespaced_config_map(ns, config_map("py-a", {"app": "py"}, "1"))
    out["created"] = {
        "name": created.metadata.name,
        "namespace": created.metadata.namespace,
        "data": created.data,
        "labels": created.metadata.labels,
        "has_uid": bool(created.metadata.uid),
        "has_resource_version": bool(created.metadata.resource_version),
        "has_creation_timestamp": created.metadata.creation_timestamp is not None,
    }

    try:
        v1.create_namespaced_config_map(ns, config_map("py-a", {"app": "py"}, "1"))
        out["create_again"] = "created a second time"
    except ApiException as e:
        out["create_again"] = failure(e)

    try:
        v1.read_namespaced_config_map("py-missing", ns)
        out["read_missing"] = "found"
    except ApiException as e:
        out["read_missing"] = failure(e)

    v1.create_namespaced_config_map(ns, config_map("py-b", {"app": "other"}, "1"))
    listed = v1.list_namespaced_config_map(ns, label_selector="app=py")
    out["selected"] = sorted(cm.metadata.name for cm in listed.items)

    # Watch from the list's version while another thread changes things:
    # py-c is created (ADDED), py-a changed (MODIFIED), py-b (not selected)
    # changed too. The client sends `watch=True`. Watching from a version
    # makes the result independent of when the changes land.
    def change():
        v1.create_namespaced_config_map(ns, config_map("py-c", {"app": "py"}, "1"))
        v1.patch_namespaced_config_map("py-a", ns, {"data": {"k": "2"}})
        v1.patch_namespaced_config_map("py-b", ns, {"data": {"k": "2"}})

    changer = threading.Timer(0.5, change)
    changer.start()
    w = watch.Watch()
    events = []
    for event in w.stream(
        v1.list_namespaced_config_map,
        ns,
        label_selector="app=py",
        resource_version=listed.metadata.resource_version,
        timeout_seconds=5,
    ):
        obj = event["object"]
        events.append([event["type"], obj.metadata.name, (obj.data or {}).get("k")])
        if len(events) >= 2:
            w.stop()
    changer.join()
    out["watched"] = events

    print(json.dumps(out, sort_keys=True))


if __name__ == "__main__":
    main()
