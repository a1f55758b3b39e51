use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

const NKEYS: usize = 10_000;
const NS: usize = 10; // 10 namespaces x 1000 keys
const SINGLE: usize = 2_000;
const GROUP_TXNS: usize = 200;
const GROUP_SIZE: usize = 100;
const GETS: usize = 20_000;
const GET_ROUNDS: usize = 5;
const SCANS: usize = 200;

fn key(i: usize) -> String {
    format!("/registry/pods/ns{:02}/pod-{:05}", i / (NKEYS / NS), i)
}
fn prefix(ns: usize) -> (String, String) {
    (format!("/registry/pods/ns{:02}/", ns), format!("/registry/pods/ns{:02}0", ns))
}

trait Store {
    fn write_batch(&mut self, keys: &[usize], val: &[u8], rec: &[u8]);
    fn get(&self, k: &str) -> usize;
    fn scan(&self, lo: &str, hi: &str) -> (usize, usize);
}

// ---------------- redb ----------------
mod r {
    use super::*;
    use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
    pub const KV: TableDefinition<&str, (u64, u64, &[u8])> = TableDefinition::new("kv");
    pub const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
    pub const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
    pub struct R(pub Database);
    impl R {
        pub fn open(p: &Path) -> R {
            let db = Database::create(p).unwrap();
            let w = db.begin_write().unwrap();
            {
                w.open_table(KV).unwrap();
                w.open_table(LOG).unwrap();
                let mut m = w.open_table(META).unwrap();
                m.insert("rev", 0u64).unwrap();
            }
            w.commit().unwrap();
            R(db)
        }
    }
    impl Store for R {
        fn write_batch(&mut self, keys: &[usize], val: &[u8], rec: &[u8]) {
            let w = self.0.begin_write().unwrap(); // Durability::Immediate by default
            {
                let mut kv = w.open_table(KV).unwrap();
                let mut log = w.open_table(LOG).unwrap();
                let mut meta = w.open_table(META).unwrap();
                for &i in keys {
                    let rev = meta.get("rev").unwrap().unwrap().value() + 1;
                    let k = key(i);
                    kv.insert(k.as_str(), (rev, rev, val)).unwrap();
                    log.insert(rev, rec).unwrap();
                    meta.insert("rev", rev).unwrap();
                }
            }
            w.commit().unwrap();
        }
        fn get(&self, k: &str) -> usize {
            let r = self.0.begin_read().unwrap();
            let t = r.open_table(KV).unwrap();
            let g = t.get(k).unwrap().unwrap();
            let (a, b, v) = g.value();
            (a + b) as usize + v.len()
        }
        fn scan(&self, lo: &str, hi: &str) -> (usize, usize) {
            let r = self.0.begin_read().unwrap();
            let t = r.open_table(KV).unwrap();
            let (mut n, mut bytes) = (0, 0);
            for e in t.range(lo..hi).unwrap() {
                let (k, v) = e.unwrap();
                let (a, _b, val) = v.value();
                n += 1;
                bytes += k.value().len() + val.len() + val[val.len() - 1] as usize + a as usize % 2;
            }
            (n, bytes)
        }
    }
}

// ---------------- sqlite ----------------
mod s {
    use super::*;
    use rusqlite::{Connection, TransactionBehavior};
    pub struct S(pub Connection);
    impl S {
        pub fn open(p: &Path) -> S {
            let c = Connection::open(p).unwrap();
            let mode: String = c.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0)).unwrap();
            assert_eq!(mode, "wal");
            c.execute_batch(
                "PRAGMA synchronous=FULL;
                 PRAGMA cache_size=-65536;
                 CREATE TABLE kv(key TEXT PRIMARY KEY, create_rev INTEGER NOT NULL, mod_rev INTEGER NOT NULL, value BLOB NOT NULL);
                 CREATE TABLE log(rev INTEGER PRIMARY KEY, record BLOB NOT NULL);
                 CREATE TABLE meta(id INTEGER PRIMARY KEY, rev INTEGER NOT NULL);
                 INSERT INTO meta VALUES(1, 0);",
            )
            .unwrap();
            let sync: i64 = c.query_row("PRAGMA synchronous", [], |r| r.get(0)).unwrap();
            assert_eq!(sync, 2); // FULL
            S(c)
        }
    }
    impl Store for S {
        fn write_batch(&mut self, keys: &[usize], val: &[u8], rec: &[u8]) {
            let tx = self.0.transaction_with_behavior(TransactionBehavior::Immediate).unwrap();
            {
                let mut getrev = tx.prepare_cached("SELECT rev FROM meta WHERE id=1").unwrap();
                let mut put = tx.prepare_cached("INSERT OR REPLACE INTO kv(key,create_rev,mod_rev,value) VALUES(?1,?2,?3,?4)").unwrap();
                let mut app = tx.prepare_cached("INSERT INTO log(rev,record) VALUES(?1,?2)").unwrap();
                let mut setrev = tx.prepare_cached("UPDATE meta SET rev=?1 WHERE id=1").unwrap();
                for &i in keys {
                    let rev: i64 = getrev.query_row([], |r| r.get::<_, i64>(0)).unwrap() + 1;
                    let k = key(i);
                    put.execute(rusqlite::params![k, rev, rev, val]).unwrap();
                    app.execute(rusqlite::params![rev, rec]).unwrap();
                    setrev.execute([rev]).unwrap();
                }
            }
            tx.commit().unwrap();
        }
        fn get(&self, k: &str) -> usize {
            // autocommit SELECT = its own implicit read transaction
            let mut st = self.0.prepare_cached("SELECT create_rev, mod_rev, value FROM kv WHERE key=?1").unwrap();
            st.query_row([k], |r| {
                let a: i64 = r.get(0)?;
                let b: i64 = r.get(1)?;
                let v = r.get_ref(2)?.as_blob()?;
                Ok((a + b) as usize + v.len())
            })
            .unwrap()
        }
        fn scan(&self, lo: &str, hi: &str) -> (usize, usize) {
            let mut st = self.0.prepare_cached("SELECT key, create_rev, value FROM kv WHERE key>=?1 AND key<?2 ORDER BY key").unwrap();
            let mut rows = st.query([lo, hi]).unwrap();
            let (mut n, mut bytes) = (0, 0);
            while let Some(row) = rows.next().unwrap() {
                let k = row.get_ref(0).unwrap().as_str().unwrap();
                let a: i64 = row.get(1).unwrap();
                let val = row.get_ref(2).unwrap().as_blob().unwrap();
                n += 1;
                bytes += k.len() + val.len() + val[val.len() - 1] as usize + a as usize % 2;
            }
            (n, bytes)
        }
    }
}

fn median(v: &mut Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn bench(name: &str, st: &mut dyn Store, rng: &mut fastrand::Rng) {
    let val: Vec<u8> = (0..1024).map(|_| rng.u8(..)).collect();
    let rec: Vec<u8> = (0..1024).map(|_| rng.u8(..)).collect();
    // preload 10k keys in batches of 1000
    let all: Vec<usize> = (0..NKEYS).collect();
    for c in all.chunks(1000) {
        st.write_batch(c, &val, &rec);
    }
    // 1. single write per txn
    let mut lat = Vec::with_capacity(SINGLE);
    let t0 = Instant::now();
    for _ in 0..SINGLE {
        let k = [rng.usize(..NKEYS)];
        let t = Instant::now();
        st.write_batch(&k, &val, &rec);
        lat.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let tot = t0.elapsed();
    let mean = lat.iter().sum::<f64>() / lat.len() as f64;
    let mut l2 = lat.clone();
    let p50 = median(&mut l2);
    let p99 = l2[l2.len() * 99 / 100];
    println!("{name} single: {:.0} writes/s, mean {:.0} us, p50 {:.0} us, p99 {:.0} us", SINGLE as f64 / tot.as_secs_f64(), mean, p50, p99);
    // 2. group commit
    let t0 = Instant::now();
    for _ in 0..GROUP_TXNS {
        let ks: Vec<usize> = (0..GROUP_SIZE).map(|_| rng.usize(..NKEYS)).collect();
        st.write_batch(&ks, &val, &rec);
    }
    let tot = t0.elapsed();
    println!("{name} group100: {:.0} writes/s ({:.2} ms/txn)", (GROUP_TXNS * GROUP_SIZE) as f64 / tot.as_secs_f64(), tot.as_secs_f64() * 1e3 / GROUP_TXNS as f64);
    // 3. point gets
    let keys: Vec<String> = (0..GETS).map(|_| key(rng.usize(..NKEYS))).collect();
    let mut rounds = vec![];
    let mut sink = 0usize;
    for _ in 0..GET_ROUNDS {
        let t = Instant::now();
        for k in &keys {
            sink = sink.wrapping_add(st.get(black_box(k)));
        }
        rounds.push(t.elapsed().as_nanos() as f64 / GETS as f64);
    }
    let r = rounds.iter().map(|x| format!("{x:.0}")).collect::<Vec<_>>().join(",");
    println!("{name} get: median {:.0} ns/get (rounds {r})", median(&mut rounds));
    // 4. prefix scans of 1000 keys
    let mut sc = vec![];
    for _ in 0..SCANS {
        let (lo, hi) = prefix(rng.usize(..NS));
        let t = Instant::now();
        let (n, b) = st.scan(&lo, &hi);
        sc.push(t.elapsed().as_secs_f64() * 1e6);
        assert_eq!(n, NKEYS / NS);
        sink = sink.wrapping_add(b);
    }
    let mean = sc.iter().sum::<f64>() / sc.len() as f64;
    println!("{name} scan1000: median {:.0} us, mean {:.0} us", median(&mut sc), mean);
    black_box(sink);
    let _ = Duration::ZERO;
}

fn main() {
    let which = std::env::args().nth(1).unwrap_or("both".into());
    let dir_owned = std::env::temp_dir().join("watchcache-embedded-db-choice");
    let dir = dir_owned.as_path();
    std::fs::create_dir_all(dir).unwrap();
    let mut rng = fastrand::Rng::with_seed(42);
    if which == "both" || which == "redb" {
        let p = dir.join("bench.redb");
        let _ = std::fs::remove_file(&p);
        let mut st = r::R::open(&p);
        bench("redb", &mut st, &mut rng);
        drop(st);
        println!("redb file size: {} KiB", std::fs::metadata(&p).unwrap().len() / 1024);
    }
    if which == "both" || which == "sqlite" {
        let p = dir.join("bench.sqlite");
        for s in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{s}", p.display()));
        }
        let mut st = s::S::open(&p);
        bench("sqlite", &mut st, &mut rng);
        drop(st);
        println!("sqlite file size: {} KiB", std::fs::metadata(&p).unwrap().len() / 1024);
    }
}
