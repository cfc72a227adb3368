//! Backend-specific tests of the file backend, on real files and real processes.
//!
//! Every test works in its own temp directory under `CARGO_TARGET_TMPDIR`, removed when the test
//! ends (also on failure), so the tests run in parallel. Tests that need other processes re-run
//! this test binary with `CHILD_ROLE` set: the test function then plays the child's part.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use cachier_core::{Claim, ClaimToken, Core, ErrorKind, FuncId, Key, Namespace, Timestamp};
use cachier_file::{Config, Durability, FileCore};

const CHILD_ROLE: &str = "CACHIER_FILE_TEST_CHILD";
const CHILD_DIR: &str = "CACHIER_FILE_TEST_DIR";

/// A fresh store directory, removed on drop.
struct TestDir(tempfile::TempDir);

impl TestDir {
    fn new() -> Self {
        TestDir(
            tempfile::Builder::new()
                .prefix("cachier-file-")
                .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
                .expect("a temp dir under CARGO_TARGET_TMPDIR"),
        )
    }

    /// The store's root: a sub-directory, so tests can check nothing escapes it.
    fn root(&self) -> PathBuf {
        self.0.path().join("store")
    }

    fn open(&self) -> FileCore {
        FileCore::open(Config::new(self.root())).expect("open the store")
    }
}

fn key(func: &str, arg: u64) -> Key {
    Key::for_args(
        &Namespace::new("tests").unwrap(),
        &FuncId::new(func).unwrap(),
        &arg,
    )
    .unwrap()
}

/// The path of the file named `name` anywhere under `root`.
fn find_file(root: &Path, name: &str) -> Option<PathBuf> {
    for item in fs::read_dir(root).ok()? {
        let path = item.ok()?.path();
        if path.is_dir() {
            if let Some(found) = find_file(&path, name) {
                return Some(found);
            }
        } else if path.file_name().is_some_and(|n| n == name) {
            return Some(path);
        }
    }
    None
}

fn all_files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for item in fs::read_dir(root).into_iter().flatten().flatten() {
        let path = item.path();
        if path.is_dir() {
            out.extend(all_files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

async fn value(core: &FileCore, key: &Key) -> Option<Vec<u8>> {
    core.get(key)
        .await
        .expect("get")
        .and_then(|e| e.value)
        .map(|v| v.to_vec())
}

#[tokio::test(flavor = "multi_thread")]
async fn values_round_trip_and_survive_reopening() {
    let dir = TestDir::new();
    let core = dir.open();
    let k = key("app::f", 1);
    assert_eq!(core.get(&k).await.unwrap(), None);

    let every_byte: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
    let stored_at = Timestamp(1_700_000_000_123);
    core.set(&k, every_byte.clone().into(), stored_at)
        .await
        .unwrap();

    // A second handle, as another process would open it, reads the same entry.
    let reopened = dir.open();
    let entry = reopened.get(&k).await.unwrap().expect("an entry");
    assert_eq!(entry.value.as_deref(), Some(&every_byte[..]));
    assert_eq!(entry.stored_at, stored_at);
    assert_eq!(entry.claim_until, None);

    // Empty and large values, with fsync durability.
    let durable =
        FileCore::open(Config::new(dir.root()).with_durability(Durability::Fsync)).unwrap();
    assert_eq!(durable.durability(), Durability::Fsync);
    let empty = key("app::f", 2);
    durable
        .set(&empty, Vec::new().into(), Timestamp::now())
        .await
        .unwrap();
    assert_eq!(value(&core, &empty).await, Some(Vec::new()));
    let large: Vec<u8> = (0..8 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let big = key("app::f", 3);
    durable
        .set(&big, large.clone().into(), Timestamp::now())
        .await
        .unwrap();
    assert!(value(&core, &big).await == Some(large));

    assert!(core.remove(&k).await.unwrap());
    assert!(!core.remove(&k).await.unwrap());
    assert_eq!(core.get(&k).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn claims_are_exclusive_and_only_the_holder_renews_or_releases() {
    let dir = TestDir::new();
    let core = dir.open();
    let k = key("app::claims", 1);

    let Claim::Acquired(token) = core.claim(&k, Duration::from_secs(30)).await.unwrap() else {
        panic!("a cold key must be claimable");
    };
    let Claim::Held { until } = core.claim(&k, Duration::from_secs(30)).await.unwrap() else {
        panic!("a live claim must be held");
    };
    assert!(until > Timestamp::now().add(Duration::from_secs(25)));
    let entry = core.get(&k).await.unwrap().expect("a claim-only entry");
    assert_eq!((entry.value, entry.claim_until), (None, Some(until)));

    let stranger = ClaimToken::generate();
    assert!(
        !core
            .renew(&k, &stranger, Duration::from_secs(60))
            .await
            .unwrap()
    );
    core.release(&k, &stranger).await.unwrap();
    assert!(core.get(&k).await.unwrap().unwrap().is_claimed());

    assert!(
        core.renew(&k, &token, Duration::from_secs(60))
            .await
            .unwrap()
    );
    let renewed = core.get(&k).await.unwrap().unwrap().claim_until.unwrap();
    assert!(renewed > until);

    core.release(&k, &token).await.unwrap();
    assert_eq!(core.get(&k).await.unwrap(), None);
    assert!(
        !core
            .renew(&k, &token, Duration::from_secs(60))
            .await
            .unwrap()
    );

    // `set` ends whatever claim exists, and the value stays readable under a new claim.
    assert!(matches!(
        core.claim(&k, Duration::from_secs(30)).await.unwrap(),
        Claim::Acquired(_)
    ));
    core.set(&k, b"v1".to_vec().into(), Timestamp::now())
        .await
        .unwrap();
    let entry = core.get(&k).await.unwrap().unwrap();
    assert_eq!(entry.claim_until, None);
    assert!(matches!(
        core.claim(&k, Duration::from_secs(30)).await.unwrap(),
        Claim::Acquired(_)
    ));
    let entry = core.get(&k).await.unwrap().unwrap();
    assert_eq!(entry.value.as_deref(), Some(&b"v1"[..]));
    assert!(entry.is_claimed());

    assert_eq!(core.clear_claims(&k.namespace, &k.func).await.unwrap(), 1);
    assert_eq!(value(&core, &k).await.as_deref(), Some(&b"v1"[..]));
    assert!(!core.get(&k).await.unwrap().unwrap().is_claimed());
}

#[tokio::test(flavor = "multi_thread")]
async fn cold_and_expired_claims_have_exactly_one_winner() {
    let dir = TestDir::new();
    for round in 0..10 {
        let k = key("app::race", round);
        // Odd rounds race for an expired claim left by an earlier holder.
        let expired = if round % 2 == 1 {
            let old = dir
                .open()
                .claim(&k, Duration::from_millis(20))
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(40)).await;
            Some(old)
        } else {
            None
        };
        let mut racers = Vec::new();
        for _ in 0..24 {
            let core = dir.open();
            let k = k.clone();
            racers.push(tokio::spawn(async move {
                core.claim(&k, Duration::from_secs(30)).await.unwrap()
            }));
        }
        let mut winners = 0;
        for racer in racers {
            if let Claim::Acquired(_) = racer.await.unwrap() {
                winners += 1;
            }
        }
        assert_eq!(winners, 1, "round {round}");
        if let Some(Claim::Acquired(old)) = expired {
            // The former holder lost its claim with its lease.
            assert!(
                !dir.open()
                    .renew(&k, &old, Duration::from_secs(9))
                    .await
                    .unwrap()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn function_ids_never_collide_and_never_escape_the_store() {
    let dir = TestDir::new();
    let core = dir.open();
    let ids = [
        "foo",
        "foo_bar",
        "foo*",
        "Foo",
        "../../escape",
        "/etc/passwd",
        "a\\b",
        "naïve::函数",
        &"x".repeat(256),
    ];
    for (i, id) in ids.iter().enumerate() {
        core.set(&key(id, 7), vec![i as u8].into(), Timestamp::now())
            .await
            .unwrap();
    }
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(value(&core, &key(id, 7)).await, Some(vec![i as u8]), "{id}");
    }
    // Nothing was written beside the store's root.
    let beside: Vec<_> = fs::read_dir(dir.0.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(beside, vec![std::ffi::OsString::from("store")]);
    for file in all_files(&dir.root()) {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.len() <= 64 && !name.starts_with('.'), "{name}");
    }

    let k = key("foo", 7);
    assert_eq!(core.clear(&k.namespace, &k.func).await.unwrap(), 1);
    assert_eq!(value(&core, &k).await, None);
    for id in &ids[1..] {
        assert!(
            value(&core, &key(id, 7)).await.is_some(),
            "clearing foo touched {id}"
        );
    }
    let ns = Namespace::new("tests").unwrap();
    assert_eq!(
        core.clear_namespace(&ns).await.unwrap(),
        ids.len() as u64 - 1
    );
    assert_eq!(fs::read_dir(dir.root()).unwrap().count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn corrupt_truncated_and_foreign_files_are_misses() {
    let dir = TestDir::new();
    let core = dir.open();
    let k = key("app::files", 1);
    let name = k.hash.to_hex();

    core.set(&k, b"good value".to_vec().into(), Timestamp::now())
        .await
        .unwrap();
    let entry_file = find_file(&dir.root(), &name).expect("the entry file");

    // Corrupt: not an entry at all.
    fs::write(
        &entry_file,
        b"this is not a cache entry, it is a shopping list",
    )
    .unwrap();
    assert_eq!(core.get(&k).await.unwrap(), None);
    core.set(&k, b"good value".to_vec().into(), Timestamp::now())
        .await
        .unwrap();
    assert_eq!(value(&core, &k).await.as_deref(), Some(&b"good value"[..]));

    // Truncated: header intact, value cut short.
    let bytes = fs::read(&entry_file).unwrap();
    fs::write(&entry_file, &bytes[..bytes.len() - 3]).unwrap();
    assert_eq!(core.get(&k).await.unwrap(), None);
    // Shorter than a header.
    fs::write(&entry_file, &bytes[..5]).unwrap();
    assert_eq!(core.get(&k).await.unwrap(), None);
    // A directory where the entry file should be.
    fs::remove_file(&entry_file).unwrap();
    fs::create_dir(&entry_file).unwrap();
    assert_eq!(core.get(&k).await.unwrap(), None);
    fs::remove_dir(&entry_file).unwrap();

    // A garbage claim file is no claim, and the next claim replaces it.
    let claim_file = entry_file.with_file_name(format!("{name}.claim"));
    fs::write(&claim_file, b"garbage").unwrap();
    assert_eq!(core.get(&k).await.unwrap(), None);
    assert!(matches!(
        core.claim(&k, Duration::from_secs(30)).await.unwrap(),
        Claim::Acquired(_)
    ));
    assert!(core.get(&k).await.unwrap().unwrap().is_claimed());

    // Foreign files in the function and namespace directories are ignored and left alone.
    let func_dir = entry_file.parent().unwrap().to_path_buf();
    let foreign = func_dir.join("notes.txt");
    fs::write(&foreign, b"mine").unwrap();
    fs::write(func_dir.parent().unwrap().join("README"), b"mine too").unwrap();
    core.set(&k, b"again".to_vec().into(), Timestamp::now())
        .await
        .unwrap();
    assert_eq!(value(&core, &k).await.as_deref(), Some(&b"again"[..]));
    assert_eq!(
        core.delete_stale(&k.namespace, &k.func, Timestamp(1))
            .await
            .unwrap(),
        0
    );
    assert_eq!(core.clear(&k.namespace, &k.func).await.unwrap(), 1);
    assert_eq!(fs::read(&foreign).unwrap(), b"mine");
    assert_eq!(core.get(&k).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn leftover_temp_files_are_ignored_then_swept() {
    let dir = TestDir::new();
    let core = dir.open();
    let k = key("app::temps", 1);
    core.set(&k, b"v".to_vec().into(), Timestamp::now())
        .await
        .unwrap();
    let func_dir = find_file(&dir.root(), &k.hash.to_hex())
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();

    // What a process killed mid-write leaves: an old temp file and a recent one.
    let old = func_dir.join(format!(".{}.999999-0-deadbeef.tmp", k.hash.to_hex()));
    let recent = func_dir.join(format!(".{}.999999-1-deadbeef.tmp", k.hash.to_hex()));
    fs::write(&old, b"half a val").unwrap();
    fs::write(&recent, b"half a val").unwrap();
    let two_hours_ago = std::time::SystemTime::now() - Duration::from_secs(2 * 3600);
    fs::File::options()
        .write(true)
        .open(&old)
        .unwrap()
        .set_modified(two_hours_ago)
        .unwrap();

    assert_eq!(value(&core, &k).await.as_deref(), Some(&b"v"[..]));
    assert_eq!(
        core.delete_stale(&k.namespace, &k.func, Timestamp(1))
            .await
            .unwrap(),
        0
    );
    assert!(!old.exists(), "an hour-old temp file is a leftover");
    assert!(
        recent.exists(),
        "a recent temp file may belong to a running write"
    );
    assert_eq!(value(&core, &k).await.as_deref(), Some(&b"v"[..]));
}

#[tokio::test(flavor = "multi_thread")]
async fn clear_renames_the_directory_aside_ends_claims_and_sweeps_leftovers() {
    let dir = TestDir::new();
    let core = dir.open();
    let k = key("app::cleared", 1);
    core.set(&k, b"v".to_vec().into(), Timestamp::now())
        .await
        .unwrap();
    let held = key("app::cleared", 2);
    let Claim::Acquired(token) = core.claim(&held, Duration::from_secs(30)).await.unwrap() else {
        panic!("cold key");
    };
    // The entry file is in its shard, in the function directory.
    let shard = find_file(&dir.root(), &k.hash.to_hex())
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    assert_eq!(shard.file_name().unwrap(), &k.hash.to_hex()[..2]);
    let func_dir = shard.parent().unwrap().to_path_buf();
    let ns_dir = func_dir.parent().unwrap().to_path_buf();
    let name = func_dir.file_name().unwrap().to_str().unwrap().to_owned();

    // What processes killed while clearing leave: an hour-old directory renamed aside, and a
    // recent one (which may still be being emptied).
    let old = ns_dir.join(format!(".clearing.{name}.999999-0-deadbeef"));
    let recent = ns_dir.join(format!(".clearing.{name}.999999-1-deadbeef"));
    for d in [&old, &recent] {
        fs::create_dir(d).unwrap();
        fs::write(d.join(k.hash.to_hex()), b"a cleared value").unwrap();
    }
    let two_hours_ago = std::time::SystemTime::now() - Duration::from_secs(2 * 3600);
    fs::File::open(&old)
        .unwrap()
        .set_modified(two_hours_ago)
        .unwrap();

    assert_eq!(core.clear(&k.namespace, &k.func).await.unwrap(), 1);
    assert!(!func_dir.exists(), "nothing foreign was left in it");
    assert!(!old.exists(), "an hour-old leftover is swept");
    assert!(
        recent.exists(),
        "a recent one may belong to a running clear"
    );
    let clearing: Vec<_> = fs::read_dir(&ns_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with(".clearing."))
        .collect();
    assert_eq!(clearing, [recent.file_name().unwrap()]);

    // The claim ended with the clear: its holder learns it lost it, and the key is free.
    assert_eq!(core.get(&held).await.unwrap(), None);
    assert!(
        !core
            .renew(&held, &token, Duration::from_secs(5))
            .await
            .unwrap()
    );
    assert!(matches!(
        core.claim(&held, Duration::from_secs(30)).await.unwrap(),
        Claim::Acquired(_)
    ));

    // `clear_namespace` removes everything, leftovers included, and leaves nothing aside.
    assert_eq!(core.clear_namespace(&k.namespace).await.unwrap(), 1);
    assert!(!ns_dir.exists());
    assert_eq!(fs::read_dir(dir.root()).unwrap().count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_stale_removes_only_old_values_and_expired_claims() {
    let dir = TestDir::new();
    let core = dir.open();
    let (old, fresh, claimed) = (
        key("app::stale", 1),
        key("app::stale", 2),
        key("app::stale", 3),
    );
    let now = Timestamp::now();
    core.set(
        &old,
        b"old".to_vec().into(),
        now.sub(Duration::from_secs(3600)),
    )
    .await
    .unwrap();
    core.set(&fresh, b"fresh".to_vec().into(), now)
        .await
        .unwrap();
    core.claim(&claimed, Duration::from_secs(30)).await.unwrap();
    let sibling = key("app::stale_sibling", 1);
    core.set(&sibling, b"old".to_vec().into(), Timestamp(5))
        .await
        .unwrap();

    let before = now.sub(Duration::from_secs(60));
    assert_eq!(
        core.delete_stale(&old.namespace, &old.func, before)
            .await
            .unwrap(),
        1
    );
    assert_eq!(value(&core, &old).await, None);
    assert_eq!(value(&core, &fresh).await.as_deref(), Some(&b"fresh"[..]));
    assert!(core.get(&claimed).await.unwrap().unwrap().is_claimed());
    assert!(
        value(&core, &sibling).await.is_some(),
        "another function's entry was removed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_the_directory_while_running_starts_over_empty() {
    let dir = TestDir::new();
    let core = dir.open();
    let k = key("app::gone", 1);
    core.set(&k, b"v".to_vec().into(), Timestamp::now())
        .await
        .unwrap();
    let Claim::Acquired(token) = core
        .claim(&key("app::gone", 2), Duration::from_secs(30))
        .await
        .unwrap()
    else {
        panic!("cold key");
    };

    fs::remove_dir_all(dir.root()).unwrap();

    assert_eq!(core.get(&k).await.unwrap(), None);
    assert!(
        !core
            .renew(&key("app::gone", 2), &token, Duration::from_secs(5))
            .await
            .unwrap()
    );
    core.release(&key("app::gone", 2), &token).await.unwrap();
    assert_eq!(core.clear(&k.namespace, &k.func).await.unwrap(), 0);
    assert!(matches!(
        core.claim(&k, Duration::from_secs(30)).await.unwrap(),
        Claim::Acquired(_)
    ));
    core.set(&k, b"w".to_vec().into(), Timestamp::now())
        .await
        .unwrap();
    assert_eq!(value(&core, &k).await.as_deref(), Some(&b"w"[..]));
}

/// Makes directories unwritable for the life of the guard, also for root (which ignores
/// permission bits) by setting the immutable attribute.
struct ReadOnly {
    dirs: Vec<PathBuf>,
    immutable: bool,
}

impl ReadOnly {
    fn new(dirs: Vec<PathBuf>) -> Self {
        use std::os::unix::fs::PermissionsExt;
        for d in &dirs {
            fs::set_permissions(d, fs::Permissions::from_mode(0o555)).unwrap();
        }
        let mut guard = ReadOnly {
            dirs,
            immutable: false,
        };
        let probe = guard.dirs[0].join("probe");
        if fs::write(&probe, b"").is_ok() {
            // Permission bits do not bind this user (root): use the immutable attribute.
            fs::remove_file(&probe).unwrap();
            guard.immutable = true;
            for d in &guard.dirs {
                let status = Command::new("chattr").arg("+i").arg(d).status();
                assert!(
                    status.is_ok_and(|s| s.success()),
                    "cannot make {} read-only for this user (chattr +i failed)",
                    d.display()
                );
            }
        }
        guard
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        use std::os::unix::fs::PermissionsExt;
        for d in &self.dirs {
            if self.immutable {
                let _ = Command::new("chattr").arg("-i").arg(d).status();
            }
            let _ = fs::set_permissions(d, fs::Permissions::from_mode(0o755));
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_read_only_directory_is_a_clear_error_and_reads_still_work() {
    let dir = TestDir::new();
    let core = dir.open();
    let k = key("app::ro", 1);
    core.set(&k, b"kept".to_vec().into(), Timestamp::now())
        .await
        .unwrap();
    let shard = find_file(&dir.root(), &k.hash.to_hex())
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    let func_dir = shard.parent().unwrap().to_path_buf();
    let ns_dir = func_dir.parent().unwrap().to_path_buf();
    let _read_only = ReadOnly::new(vec![shard.clone(), func_dir, ns_dir, dir.root()]);

    assert_eq!(value(&core, &k).await.as_deref(), Some(&b"kept"[..]));
    let err = core
        .set(&k, b"new".to_vec().into(), Timestamp::now())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    assert_eq!(err.operation(), Some("set"));
    assert_eq!(err.backend(), Some("file"));
    assert_eq!(err.key(), Some(k.to_string().as_str()));
    assert!(err.to_string().contains(&*shard.to_string_lossy()), "{err}");

    let err = core.claim(&k, Duration::from_secs(5)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    let err = core
        .set(
            &key("app::ro_new", 1),
            b"x".to_vec().into(),
            Timestamp::now(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    assert_eq!(value(&core, &k).await.as_deref(), Some(&b"kept"[..]));
}

#[test]
fn a_regular_file_as_the_directory_is_a_config_error_naming_the_path() {
    let dir = TestDir::new();
    fs::create_dir_all(dir.0.path()).unwrap();
    let file = dir.0.path().join("not-a-directory");
    fs::write(&file, b"x").unwrap();
    for path in [file.clone(), file.join("below")] {
        let err = FileCore::open(Config::new(&path)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{err}");
        assert_eq!(err.operation(), Some("open"));
        assert_eq!(err.backend(), Some("file"));
        assert!(
            err.to_string().contains(&*path.to_string_lossy()),
            "the message names the path: {err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn wait_wakes_on_set_release_and_lease_expiry() {
    let dir = TestDir::new();
    let core = dir.open();

    // Woken by a set from this process.
    let k = key("app::wait", 1);
    core.claim(&k, Duration::from_secs(30)).await.unwrap();
    let setter = {
        let (core, k) = (core.clone(), k.clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            core.set(&k, b"done".to_vec().into(), Timestamp::now())
                .await
                .unwrap();
        })
    };
    let started = Instant::now();
    let entry = core
        .wait(&k, Duration::from_secs(20))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(entry.value.as_deref(), Some(&b"done"[..]));
    assert!(started.elapsed() < Duration::from_secs(5));
    setter.await.unwrap();

    // A timeout returns the entry with the live claim.
    let k = key("app::wait", 2);
    core.claim(&k, Duration::from_secs(30)).await.unwrap();
    let entry = core
        .wait(&k, Duration::from_millis(100))
        .await
        .unwrap()
        .unwrap();
    assert!(entry.is_claimed());

    // A dead holder's lease runs out; the waiter notices promptly, without a set.
    let k = key("app::wait", 3);
    core.claim(&k, Duration::from_millis(300)).await.unwrap();
    let started = Instant::now();
    let entry = dir.open().wait(&k, Duration::from_secs(20)).await.unwrap();
    assert_eq!(entry, None);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(200) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
}

/// Child processes running this test binary, killed when the guard drops (also on failure).
struct Children(Vec<Child>);

impl Children {
    fn spawn(test: &str, role: &str, dir: &Path, count: usize) -> Self {
        let exe = std::env::current_exe().expect("the test binary's path");
        let children = (0..count)
            .map(|_| {
                Command::new(&exe)
                    .args([test, "--exact", "--nocapture", "--test-threads=1"])
                    .env(CHILD_ROLE, role)
                    .env(CHILD_DIR, dir)
                    .stdout(Stdio::piped())
                    .spawn()
                    .expect("spawn a child test process")
            })
            .collect();
        Children(children)
    }

    /// The lines a child prints, read on a thread of their own.
    fn lines(child: &mut Child) -> mpsc::Receiver<String> {
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        rx
    }

    /// Waits (two minutes at most) for a line ending with `marker` (libtest may print the
    /// test's name on the same line).
    fn wait_for_line(lines: &mpsc::Receiver<String>, marker: &str) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            match lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) if line.trim_end().ends_with(marker) => return,
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("the child printed no {marker} within two minutes")
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    panic!("the child ended before printing {marker}")
                }
            }
        }
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn child_dir() -> PathBuf {
    PathBuf::from(std::env::var_os(CHILD_DIR).expect("the parent sets the store directory"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_holder_killed_with_sigkill_blocks_others_only_until_its_lease_expires() {
    const LEASE: Duration = Duration::from_millis(1500);
    let k = key("app::sigkill", 1);
    if std::env::var(CHILD_ROLE).as_deref() == Ok("holder") {
        // The child: claim, keep renewing as a computing holder does, never finish.
        let core = FileCore::open(Config::new(child_dir())).unwrap();
        let Claim::Acquired(token) = core.claim(&k, LEASE).await.unwrap() else {
            panic!("the holder must win a cold key");
        };
        println!("CLAIMED");
        loop {
            tokio::time::sleep(LEASE / 5).await;
            assert!(core.renew(&k, &token, LEASE).await.unwrap());
        }
    }

    let dir = TestDir::new();
    let mut children = Children::spawn(
        "a_holder_killed_with_sigkill_blocks_others_only_until_its_lease_expires",
        "holder",
        &dir.root(),
        1,
    );
    let output = Children::lines(&mut children.0[0]);
    Children::wait_for_line(&output, "CLAIMED");
    let core = dir.open();

    // Alive, the holder keeps its claim beyond one lease.
    tokio::time::sleep(LEASE + LEASE / 2).await;
    assert!(matches!(
        core.claim(&k, LEASE).await.unwrap(),
        Claim::Held { .. }
    ));

    children.0[0].kill().unwrap(); // SIGKILL on Unix
    children.0[0].wait().unwrap();
    let killed = Instant::now();
    // Right after the kill, its lease is still running.
    assert!(matches!(
        core.claim(&k, LEASE).await.unwrap(),
        Claim::Held { .. }
    ));

    let entry = core.wait(&k, Duration::from_secs(30)).await.unwrap();
    assert!(entry.is_none_or(|e| !e.is_claimed()));
    let Claim::Acquired(token) = core.claim(&k, Duration::from_secs(30)).await.unwrap() else {
        panic!("the dead holder's claim must be taken over once its lease expired");
    };
    let blocked = killed.elapsed();
    assert!(
        blocked <= LEASE + Duration::from_secs(1),
        "blocked for {blocked:?}"
    );
    core.set(&k, b"recomputed".to_vec().into(), Timestamp::now())
        .await
        .unwrap();
    assert!(
        !core.renew(&k, &token, LEASE).await.unwrap(),
        "set ends the claim"
    );
    assert_eq!(value(&core, &k).await.as_deref(), Some(&b"recomputed"[..]));
}

/// The front end's algorithm on one key, reduced to the backend calls: read, else claim and
/// compute (appending a line to `computations` for each computation), else wait for the value.
async fn get_or_compute(core: Arc<FileCore>, k: Key, computations: PathBuf) -> Vec<u8> {
    use std::io::Write;
    loop {
        if let Some(v) = value(&core, &k).await {
            return v;
        }
        match core.claim(&k, Duration::from_secs(10)).await.unwrap() {
            Claim::Acquired(_) => {
                let mut log = fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&computations)
                    .unwrap();
                writeln!(log, "computed by {}", std::process::id()).unwrap();
                tokio::time::sleep(Duration::from_millis(300)).await;
                let v = b"the answer".to_vec();
                core.set(&k, v.clone().into(), Timestamp::now())
                    .await
                    .unwrap();
                return v;
            }
            Claim::Held { .. } => {
                if let Some(v) = core
                    .wait(&k, Duration::from_secs(20))
                    .await
                    .unwrap()
                    .and_then(|e| e.value)
                {
                    return v.to_vec();
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn eight_processes_of_eight_tasks_compute_a_cold_key_once() {
    const PROCESSES: usize = 8;
    const TASKS: usize = 8;
    let k = key("app::single_flight", 42);
    if std::env::var(CHILD_ROLE).as_deref() == Ok("caller") {
        let dir = child_dir();
        let core = Arc::new(FileCore::open(Config::new(dir.join("store"))).unwrap());
        println!("READY");
        // Start together: the parent creates `go` once every child is ready.
        while !dir.join("go").exists() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let tasks: Vec<_> = (0..TASKS)
            .map(|_| {
                tokio::spawn(get_or_compute(
                    core.clone(),
                    k.clone(),
                    dir.join("computations"),
                ))
            })
            .collect();
        for task in tasks {
            assert_eq!(task.await.unwrap(), b"the answer");
        }
        println!("DONE");
        return;
    }

    let dir = TestDir::new();
    let shared = dir.0.path().to_path_buf();
    let mut children = Children::spawn(
        "eight_processes_of_eight_tasks_compute_a_cold_key_once",
        "caller",
        &shared,
        PROCESSES,
    );
    let outputs: Vec<_> = children.0.iter_mut().map(Children::lines).collect();
    for out in &outputs {
        Children::wait_for_line(out, "READY");
    }
    fs::write(shared.join("go"), b"").unwrap();
    for out in &outputs {
        Children::wait_for_line(out, "DONE");
    }
    for child in &mut children.0 {
        assert!(child.wait().unwrap().success());
    }
    let log = fs::read_to_string(shared.join("computations")).unwrap();
    assert_eq!(log.lines().count(), 1, "computations:\n{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn files_of_the_unsharded_layout_are_misses_and_go_with_clear() {
    let dir = TestDir::new();
    let core = dir.open();
    let k = key("app::layout", 1);
    core.set(&k, b"sharded".to_vec().into(), Timestamp::now())
        .await
        .unwrap();
    let entry = find_file(&dir.root(), &k.hash.to_hex()).unwrap();
    let func_dir = entry.parent().unwrap().parent().unwrap().to_path_buf();
    // Layout 1 kept a valid entry file (and its claim) directly in the function directory.
    let old = key("app::layout", 2);
    fs::copy(&entry, func_dir.join(old.hash.to_hex())).unwrap();
    fs::write(
        func_dir.join(format!("{}.claim", old.hash.to_hex())),
        b"an old claim",
    )
    .unwrap();
    // A regular file with a shard's name is foreign, and so is a directory inside a shard.
    fs::write(func_dir.join("ff"), b"not a shard").unwrap();
    fs::create_dir(entry.parent().unwrap().join("0a")).unwrap();

    assert_eq!(core.get(&old).await.unwrap(), None, "layout 1 is not read");
    assert_eq!(value(&core, &k).await.as_deref(), Some(&b"sharded"[..]));
    assert_eq!(core.clear(&k.namespace, &k.func).await.unwrap(), 2);
    let mut left: Vec<String> = all_files(&dir.root())
        .iter()
        .map(|p| p.strip_prefix(&func_dir).unwrap().display().to_string())
        .collect();
    left.sort();
    assert_eq!(left, ["ff"], "only the foreign file is put back");
    assert!(
        entry.parent().unwrap().join("0a").is_dir(),
        "a foreign directory in a shard is put back where it was"
    );
    assert_eq!(core.get(&k).await.unwrap(), None);
}

/// Entries read on the calling task and entries handed, open, to the blocking pool (larger
/// than `inline_read_max`, or every read with 0) give the same values, `stored_at`, claims and
/// misses, through `get` and `get_value`.
#[tokio::test(flavor = "multi_thread")]
async fn inline_and_blocking_pool_reads_agree() {
    let dir = TestDir::new();
    let writer = dir.open();
    let sizes = [0usize, 8, 100, 70_000];
    let stored_at = Timestamp(1_700_000_000_456);
    for (i, size) in sizes.iter().enumerate() {
        let v: Vec<u8> = (0..*size).map(|b| (b % 253) as u8).collect();
        writer
            .set(&key("app::inline", i as u64), v.into(), stored_at)
            .await
            .unwrap();
    }
    let claimed = key("app::inline", 3);
    let Claim::Acquired(_) = writer
        .claim(&claimed, Duration::from_secs(30))
        .await
        .unwrap()
    else {
        panic!("a fresh key is claimable");
    };
    for max in [0u64, 40, 1024, cachier_file::DEFAULT_INLINE_READ_MAX] {
        let core = FileCore::open(Config::new(dir.root()).with_inline_read_max(max)).unwrap();
        for (i, size) in sizes.iter().enumerate() {
            let k = key("app::inline", i as u64);
            let want: Vec<u8> = (0..*size).map(|b| (b % 253) as u8).collect();
            let entry = core.get(&k).await.unwrap().expect("an entry");
            assert_eq!(entry.value.as_deref(), Some(&want[..]), "get, max {max}");
            assert_eq!(entry.stored_at, stored_at);
            assert_eq!(entry.claim_until.is_some(), k == claimed, "max {max}");
            let entry = core.get_value(&k).await.unwrap().expect("a value");
            assert_eq!(
                entry.value.as_deref(),
                Some(&want[..]),
                "get_value, max {max}"
            );
            assert_eq!(entry.stored_at, stored_at);
        }
        let absent = key("app::inline", 99);
        assert_eq!(core.get(&absent).await.unwrap(), None);
        assert_eq!(core.get_value(&absent).await.unwrap(), None);
    }
    // A truncated entry larger than the inline limit is a miss on the pool too.
    let big = key("app::inline", 3);
    let entry_file = find_file(&dir.root(), &big.hash.to_hex()).expect("the entry file");
    let bytes = fs::read(&entry_file).unwrap();
    fs::write(&entry_file, &bytes[..bytes.len() - 1]).unwrap();
    let core = FileCore::open(Config::new(dir.root()).with_inline_read_max(1024)).unwrap();
    assert_eq!(core.get_value(&big).await.unwrap(), None);
    let entry = core.get(&big).await.unwrap().expect("the claim");
    assert_eq!(entry.value, None);
    assert!(entry.claim_until.is_some());
}
