//! kube-rs with the kubeconfig `watchcache serve --write-kubeconfig` writes, and nothing else:
//! `Kubeconfig::read_from` and `Config::from_custom_kubeconfig`, then over TLS (the written CA,
//! the written token) a list of namespaces, a create, and a watch that sees the object created.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{ListParams, PostParams, WatchEvent, WatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use watchcache_e2e::Server;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_loads_the_written_kubeconfig_and_lists_and_watches_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("admin.kubeconfig");
    let server =
        Server::start(&["--tls-self-signed", &format!("--write-kubeconfig={}", kubeconfig.display())]);
    assert!(server.startup_line.contains("https://"), "{}", server.startup_line);
    // The kubeconfig is written before the startup line.
    let file = Kubeconfig::read_from(&kubeconfig).expect("kube-rs reads the written kubeconfig");
    let config = Config::from_custom_kubeconfig(file, &KubeConfigOptions::default()).await.unwrap();
    assert!(config.cluster_url.to_string().starts_with("https://127.0.0.1:"), "{}", config.cluster_url);
    let client = Client::try_from(config).unwrap();
    let limit = Duration::from_secs(120);
    tokio::time::timeout(limit, async move {
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let names: Vec<String> = namespaces
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter_map(|namespace| namespace.metadata.name)
            .collect();
        assert!(names.contains(&"kube-system".to_owned()) && names.contains(&"default".to_owned()), "{names:?}");
        let configmaps: Api<ConfigMap> = Api::default_namespaced(client);
        let listed = configmaps.list(&ListParams::default()).await.unwrap();
        let version = listed.metadata.resource_version.unwrap();
        let mut watch = configmaps.watch(&WatchParams::default(), &version).await.unwrap().boxed();
        let configmap: ConfigMap = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "from-kube-rs"}, "data": {"key": "value"},
        }))
        .unwrap();
        configmaps.create(&PostParams::default(), &configmap).await.unwrap();
        while let Some(event) = watch.try_next().await.unwrap() {
            if let WatchEvent::Added(added) = event {
                assert_eq!(added.metadata.name.as_deref(), Some("from-kube-rs"));
                assert_eq!(added.data.unwrap()["key"], "value");
                return;
            }
        }
        panic!("the watch ended before the ConfigMap was seen");
    })
    .await
    .expect("no answer within the test's limit");
}
