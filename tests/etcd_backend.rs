//! What only the etcd backend does: kube-apiserver's key layout, surviving a dead member, and a
//! clear error when etcd cannot be reached.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::EtcdCluster;
use watchcache::storage::etcd::{EtcdOptions, EtcdStorage};
use watchcache::storage::{ListOptions, Storage, StorageError, WatchMessage};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_follow_kube_apiservers_layout() {
    let cluster = EtcdCluster::start(1);
    let storage = cluster.storage("/registry").await;
    let value = Bytes::from_static(br#"{"kind":"ConfigMap","apiVersion":"v1"}"#);
    storage.create("/configmaps/default/settings", value.clone()).await.unwrap();
    storage.create("/apps/deployments/kube-system/dns", Bytes::from_static(b"{}")).await.unwrap();

    let mut raw = etcd_client::Client::connect(cluster.client_urls(), None).await.unwrap();
    let found = raw.get("/registry/configmaps/default/settings", None).await.unwrap();
    assert_eq!(found.kvs()[0].value(), &value[..]);
    let found = raw.get("/registry/apps/deployments/kube-system/dns", None).await.unwrap();
    assert_eq!(found.kvs().len(), 1);

    // A key written by another writer under the prefix is seen; one outside it is not.
    raw.put("/registry/configmaps/default/other", "{}", None).await.unwrap();
    raw.put("/elsewhere/configmaps/default/x", "{}", None).await.unwrap();
    let listed = storage.list("/configmaps/", ListOptions::default()).await.unwrap();
    let keys: Vec<&str> = listed.items.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, ["/configmaps/default/other", "/configmaps/default/settings"]);

    // Another prefix is another store on the same cluster.
    let other = cluster.storage("/tenant-b").await;
    assert_eq!(other.count("/").await.unwrap(), 0);
    other.create("/configmaps/default/settings", Bytes::from_static(b"b")).await.unwrap();
    let found = raw.get("/tenant-b/configmaps/default/settings", None).await.unwrap();
    assert_eq!(found.kvs()[0].value(), b"b");
    assert_eq!(storage.get("/configmaps/default/settings").await.unwrap().unwrap().value, value);
}

/// The index of a member that is not the leader.
async fn a_follower(cluster: &EtcdCluster) -> usize {
    let urls = cluster.client_urls();
    for (index, url) in urls.iter().enumerate() {
        let mut client = etcd_client::Client::connect([url], None).await.unwrap();
        let status = client.status().await.unwrap();
        let id = status.header().unwrap().member_id();
        if status.leader() != id && status.leader() != 0 {
            return index;
        }
    }
    panic!("no follower found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_member_does_not_fail_requests() {
    let mut cluster = EtcdCluster::start(3);
    let follower = a_follower(&cluster).await;
    // The dead member is the first endpoint, where every request goes first.
    let mut urls = cluster.client_urls();
    urls.swap(0, follower);
    let storage = EtcdStorage::connect(&urls, EtcdOptions::default()).await.unwrap();
    let before = storage.create("/pods/default/before", Bytes::from_static(b"1")).await.unwrap();
    let mut watch = storage.watch("/pods/", before.mod_revision).await.unwrap();

    cluster.kill(follower);

    // The watch on the dead member ends with a retryable error...
    let ended =
        tokio::time::timeout(Duration::from_secs(20), watch.next()).await.expect("watch noticed the death");
    match ended {
        Some(Err(error)) => assert!(error.is_retryable(), "{error:?}"),
        None => {}
        Some(Ok(message)) => panic!("unexpected {message:?}"),
    }
    // ...and every request after it succeeds on the live members.
    let mut last = before.clone();
    for i in 0..20 {
        let key = format!("/pods/default/p{i}");
        let kv = storage.create(&key, Bytes::from(format!("{i}"))).await.expect("create with a dead member");
        assert_eq!(storage.get(&key).await.unwrap().unwrap(), kv);
        last = kv;
    }
    assert_eq!(storage.count("/pods/").await.unwrap(), 21);
    let listed = storage.list("/pods/", ListOptions { limit: Some(5), ..Default::default() }).await.unwrap();
    assert_eq!(listed.items.len(), 5);
    // A new watch from where the old one stopped sees every write since.
    let mut watch = storage.watch("/pods/", before.mod_revision).await.unwrap();
    let mut seen = 0;
    while seen < 20 {
        match tokio::time::timeout(Duration::from_secs(10), watch.next()).await.unwrap().unwrap().unwrap() {
            WatchMessage::Events(events) => seen += events.len(),
            WatchMessage::Progress(_) => {}
        }
    }
    assert_eq!(seen, 20);
    assert_eq!(storage.current_revision().await.unwrap(), last.mod_revision);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_that_never_existed_is_skipped() {
    let cluster = EtcdCluster::start(1);
    let dead = format!(
        "http://127.0.0.1:{}",
        std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    );
    let mut urls = vec![dead];
    urls.extend(cluster.client_urls());
    let storage = EtcdStorage::connect(&urls, EtcdOptions::default()).await.unwrap();
    for i in 0..10 {
        storage.create(&format!("/leases/default/l{i}"), Bytes::from_static(b"x")).await.unwrap();
    }
    assert_eq!(storage.count("/leases/").await.unwrap(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_etcd_is_a_clear_error_after_a_bounded_retry() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}");
    let options = EtcdOptions { startup_timeout: Duration::from_secs(1), ..EtcdOptions::default() };
    let started = Instant::now();
    let result = EtcdStorage::connect(std::slice::from_ref(&url), options).await;
    let error = match result {
        Err(error) => error,
        Ok(_) => panic!("connected to nothing"),
    };
    assert!(matches!(&error, StorageError::Unavailable(message) if message.contains(&url)), "{error}");
    assert!(started.elapsed() < Duration::from_secs(20), "retry is not bounded: {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_loses_its_leader_fails_watches_and_writes_instead_of_stalling() {
    let mut cluster = EtcdCluster::start(3);
    let urls = cluster.client_urls();
    // Only member 0 is an endpoint; the other two die, so it has no leader any more.
    let storage = EtcdStorage::connect(&urls[..1], EtcdOptions::default()).await.unwrap();
    let before = storage.create("/pods/default/before", Bytes::from_static(b"1")).await.unwrap();
    let mut watch = storage.watch("/pods/", before.mod_revision).await.unwrap();
    cluster.kill(1);
    cluster.kill(2);
    let killed = Instant::now();
    // Without a leader requirement this watch would wait for events forever.
    let ended = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match watch.next().await {
                Some(Ok(WatchMessage::Progress(_))) => continue,
                other => return other,
            }
        }
    })
    .await
    .expect("the watch on a member without a leader never ended");
    assert!(matches!(ended, Some(Err(StorageError::Unavailable(_))) | None), "{ended:?}");
    eprintln!("the watch ended {:?} after the leader was lost", killed.elapsed());
    // A write now fails fast with a retryable error rather than after the request timeout.
    let started = Instant::now();
    let error = storage.create("/pods/default/after", Bytes::from_static(b"2")).await.unwrap_err();
    assert!(error.is_retryable(), "{error}");
    assert!(started.elapsed() < Duration::from_secs(2), "the write took {:?}", started.elapsed());
}

/// Two replicas on one etcd elect one compactor per round on kube-apiserver's
/// `compact_rev_key`, and the winner compacts to the revision seen a round before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_elect_one_compactor_per_round_on_compact_rev_key() {
    use watchcache::storage::compactor::{round, CompactorStats, Round};
    let cluster = EtcdCluster::start(1);
    let first = cluster.storage("/registry").await;
    let second = cluster.storage("/registry").await;
    let (first_stats, second_stats) = (CompactorStats::default(), CompactorStats::default());
    let compactions = |stats: &CompactorStats| stats.compactions.load(std::sync::atomic::Ordering::Relaxed);
    let lost = |stats: &CompactorStats| stats.lost_rounds.load(std::sync::atomic::Ordering::Relaxed);

    for index in 0..3 {
        first.create(&format!("/configmaps/default/a{index}"), Bytes::from_static(b"{}")).await.unwrap();
    }
    // Round 1: the first replica claims; the second sees the claim and loses.
    let a1 = round(&first, Round::default(), &first_stats).await;
    let b1 = round(&second, Round::default(), &second_stats).await;
    assert_eq!((a1.seen_version, b1.seen_version), (1, 1));
    assert_eq!((lost(&first_stats), lost(&second_stats)), (0, 1));
    let mut raw = etcd_client::Client::connect(cluster.client_urls(), None).await.unwrap();
    let key = raw.get("compact_rev_key", None).await.unwrap();
    assert_eq!(key.kvs()[0].value_str().unwrap(), "0", "the first round records no revision to compact to");

    for index in 0..3 {
        second.create(&format!("/configmaps/default/b{index}"), Bytes::from_static(b"{}")).await.unwrap();
    }
    // Round 2: the second replica is first this time and wins; it compacts to the revision it
    // saw in round 1. The first replica, a round behind on the key's version, loses.
    let b2 = round(&second, b1, &second_stats).await;
    let a2 = round(&first, a1, &first_stats).await;
    assert_eq!((compactions(&first_stats), compactions(&second_stats)), (0, 1));
    assert_eq!(lost(&first_stats), 1);
    assert_eq!((a2.seen_version, b2.seen_version), (2, 2));
    let compacted_to = b1.revision;
    let before = ListOptions { revision: Some(compacted_to - 1), ..ListOptions::default() };
    assert!(matches!(first.list("/configmaps/", before).await, Err(StorageError::Compacted { .. })));
    let at = ListOptions { revision: Some(compacted_to), ..ListOptions::default() };
    assert_eq!(first.list("/configmaps/", at).await.unwrap().items.len(), 3, "one round of history is kept");
    let key = raw.get("compact_rev_key", None).await.unwrap();
    assert_eq!(key.kvs()[0].value_str().unwrap(), compacted_to.to_string());
}

/// What the proxy recognizes a write by.
const KEY_MARK: &[u8] = b"generated-x7k2p";

/// A TCP proxy in front of etcd that, once armed, forwards the next request bytes and then cuts
/// the connection before etcd's answer gets back: a write applied whose answer was lost.
struct AnswerLosingProxy {
    url: String,
    armed: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl AnswerLosingProxy {
    async fn start(target: &str) -> AnswerLosingProxy {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let target = target.trim_start_matches("http://").to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let armed = Arc::new(AtomicBool::new(false));
        let armed_for_task = Arc::clone(&armed);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(&target).await else { continue };
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                let armed = Arc::clone(&armed_for_task);
                let cut = Arc::new(AtomicBool::new(false));
                let cut_requests = Arc::clone(&cut);
                tokio::spawn(async move {
                    let mut buffer = vec![0; 64 * 1024];
                    while let Ok(read) = client_read.read(&mut buffer).await {
                        if read == 0 || server_write.write_all(&buffer[..read]).await.is_err() {
                            break;
                        }
                        // The write itself: the chunk that carries the key.
                        let request = buffer[..read].windows(KEY_MARK.len()).any(|window| window == KEY_MARK);
                        if request && armed.swap(false, Ordering::SeqCst) {
                            // Keep etcd's side open while it applies and answers: the answer
                            // is what gets lost, not the request.
                            cut_requests.store(true, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_secs(2)).await;
                            break;
                        }
                    }
                });
                tokio::spawn(async move {
                    let mut buffer = vec![0; 64 * 1024];
                    let mut cut_at = None;
                    while let Ok(read) =
                        tokio::time::timeout(Duration::from_millis(100), server_read.read(&mut buffer))
                            .await
                            .unwrap_or(Ok(usize::MAX))
                    {
                        if read == 0 {
                            break;
                        }
                        // Once the request went through, everything etcd sends (its answer
                        // included) is dropped for a second; then the client's side closes.
                        if cut.load(Ordering::SeqCst) {
                            let since = *cut_at.get_or_insert_with(std::time::Instant::now);
                            if since.elapsed() > Duration::from_secs(1) {
                                break;
                            }
                            continue;
                        }
                        if read == usize::MAX {
                            continue;
                        }
                        if client_write.write_all(&buffer[..read]).await.is_err() {
                            break;
                        }
                    }
                    // Both halves to the client go: the connection is reset.
                });
            }
        });
        AnswerLosingProxy { url, armed }
    }

    fn arm(&self) {
        self.armed.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// An update applied by etcd whose answer was lost is resent to the next endpoint; the resend
/// finds its own value and reports success, not Conflict. A create whose answer was lost is not
/// resent (a first attempt still in flight could apply after a later delete and bring the
/// object back): it fails saying the create may or may not have been applied, and it was
/// applied exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_whose_answer_was_lost_is_resent_only_when_that_is_safe() {
    let cluster = EtcdCluster::start(1);
    let direct = cluster.client_urls()[0].clone();
    let proxy = AnswerLosingProxy::start(&direct).await;
    let options = EtcdOptions { request_timeout: Duration::from_secs(3), ..EtcdOptions::default() };
    // The proxy first: requests go through it until it fails.
    let storage = EtcdStorage::connect(&[proxy.url.clone(), direct.clone()], options).await.unwrap();
    let reader = cluster.storage("/registry").await;

    proxy.arm();
    let lost =
        storage.create("/configmaps/default/generated-x7k2p", Bytes::from_static(b"{\"uid\":\"1\"}")).await;
    match lost {
        Err(StorageError::Unavailable(message)) => {
            assert!(message.contains("may or may not have been applied"), "{message}")
        }
        other => panic!("a create whose answer was lost must not be resent: {other:?}"),
    }
    let created =
        reader.get("/configmaps/default/generated-x7k2p").await.unwrap().expect("the create was applied");
    assert_eq!(&created.value[..], b"{\"uid\":\"1\"}");
    assert_eq!(reader.count("/configmaps/").await.unwrap(), 1);

    // The same for an update, through the proxy again.
    let storage =
        EtcdStorage::connect(&[proxy.url.clone(), direct.clone()], EtcdOptions::default()).await.unwrap();
    proxy.arm();
    let updated = storage
        .update(
            "/configmaps/default/generated-x7k2p",
            Bytes::from_static(b"{\"uid\":\"1\",\"v\":2}"),
            created.mod_revision,
        )
        .await
        .expect("the update was applied: a resend must not say Conflict");
    let stored = reader.get("/configmaps/default/generated-x7k2p").await.unwrap().unwrap();
    assert_eq!(stored.mod_revision, updated.mod_revision);
    assert_eq!(&stored.value[..], b"{\"uid\":\"1\",\"v\":2}");

    // A create of a key that someone else wrote is still AlreadyExists, resent or not.
    assert!(matches!(
        storage.create("/configmaps/default/generated-x7k2p", Bytes::from_static(b"{\"uid\":\"2\"}")).await,
        Err(StorageError::AlreadyExists { .. })
    ));
}
