"""Smoke test of watchcache with the official Python Kubernetes client.

Usage: python3 smoke.py http://127.0.0.1:PORT
   or: python3 smoke.py KUBECONFIG   (e.g. the one `watchcache serve --write-kubeconfig` writes:
                                      HTTPS with its CA and token)
Exits 0 when every step behaved as kube-apiserver would.
"""

import json
import sys
import threading
import time

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException


def main(server: str) -> None:
    if server.startswith("http://") or server.startswith("https://"):
        configuration = client.Configuration(host=server)
    else:
        configuration = client.Configuration()
        config.load_kube_config(config_file=server, client_configuration=configuration)
    api = client.CoreV1Api(client.ApiClient(configuration))

    namespace = "smoke"
    api.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    assert namespace in [ns.metadata.name for ns in api.list_namespace().items]

    created_uids = {}
    for name, app in [("one", "web"), ("two", "db")]:
        body = client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name=name, labels={"app": app}), data={"key": name}
        )
        created = api.create_namespaced_config_map(namespace, body)
        assert created.metadata.resource_version, "a created object has a resourceVersion"
        assert created.metadata.uid
        assert created.metadata.namespace == namespace
        created_uids[name] = created.metadata.uid

    web = api.list_namespaced_config_map(namespace, label_selector="app=web")
    assert [item.metadata.name for item in web.items] == ["one"], web.items

    patched = api.patch_namespaced_config_map("one", namespace, {"data": {"key": "patched"}})
    assert patched.data["key"] == "patched"
    read = api.read_namespaced_config_map("one", namespace)
    assert read.data["key"] == "patched"
    assert read.metadata.labels == {"app": "web"}, read.metadata.labels
    assert read.metadata.uid == created_uids["one"]

    try:
        api.create_namespaced_config_map(namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="one")))
        raise AssertionError("a duplicate create succeeded")
    except ApiException as error:
        assert error.status == 409, error
        assert json.loads(error.body)["reason"] == "AlreadyExists", error.body

    # A watch sees a configmap created while it runs.
    listed = api.list_namespaced_config_map(namespace)
    seen = []

    def create_later() -> None:
        time.sleep(0.5)
        api.create_namespaced_config_map(namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="three")))

    writer = threading.Thread(target=create_later)
    writer.start()
    stream = watch.Watch().stream(
        api.list_namespaced_config_map,
        namespace,
        resource_version=listed.metadata.resource_version,
        timeout_seconds=5,
    )
    for event in stream:
        seen.append((event["type"], event["object"].metadata.name))
        if event["object"].metadata.name == "three":
            break
    writer.join()
    assert ("ADDED", "three") in seen, f"the watch did not see three ADDED within 5 s: {seen}"

    api.delete_namespaced_config_map("one", namespace)
    try:
        api.read_namespaced_config_map("one", namespace)
        raise AssertionError("a deleted object is still there")
    except ApiException as error:
        assert error.status == 404, error
        assert json.loads(error.body)["reason"] == "NotFound", error.body
    remaining = api.list_namespaced_config_map(namespace)
    assert sorted(item.metadata.name for item in remaining.items) == ["three", "two"], remaining.items

    print("python client smoke test passed")


if __name__ == "__main__":
    main(sys.argv[1])
