//! A plugin that panics or lies: each fault is an error of the call (a miss for the front
//! end), never a crash of the host, an unwind across the ABI or an allocation of a claimed
//! length; the next calls work.

mod support;

use std::sync::Arc;
use std::time::Duration;

use cachier_core::{Cachier, Core, ErrorKind, FuncId, Key, Namespace, Timestamp};
use cachier_plugin::PluginCore;

fn key(func: &str) -> Key {
    Key::for_args(&Namespace::default(), &FuncId::new(func).unwrap(), &1u8).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_panicking_get_is_an_error_and_the_next_calls_work() {
    let core = PluginCore::load_symbol(support::fixtures(), "cachier_fixture_panicking", "")
        .expect("the panicking fixture loads");
    let (bad, good) = (key("panics"), key("fine"));
    for round in 0..3 {
        let err = core.get(&bad).await.expect_err("get did not fail");
        assert_eq!(err.kind(), ErrorKind::Backend, "{err}");
        assert!(!err.is_retryable(), "{err}");
        assert!(
            err.to_string()
                .contains("the plugin panicked in get: the fixture's get panicked on purpose"),
            "{err}"
        );
        // The hit path (`try_get_value`, on this task) panics the same way.
        let err = core
            .get_value(&bad)
            .await
            .expect_err("get_value did not fail");
        assert!(err.to_string().contains("panicked in get_value"), "{err}");

        core.set(&good, vec![round].into(), Timestamp::now())
            .await
            .expect("set after a panic");
        let entry = core.get(&good).await.expect("get after a panic").unwrap();
        assert_eq!(entry.value.as_deref(), Some(&[round][..]));
    }

    // Through the front end the panic is a backend error: the function is computed.
    let cache = Cachier::new(Arc::new(core.clone()));
    let f = cache.function(FuncId::new("panics").unwrap());
    assert_eq!(f.call(&1u8, || async { 5u32 }).await.unwrap(), 5);
    assert!(f.stats().backend_errors > 0);
    let strict = f.configure(|s| s.strict = true);
    let err = strict.call(&1u8, || async { 6u32 }).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Backend, "{err}");
}

#[test]
fn a_panicking_open_is_an_error() {
    let err = PluginCore::load_symbol(support::fixtures(), "cachier_fixture_panicking", "panic")
        .expect_err("open did not fail");
    assert_eq!(err.kind(), ErrorKind::Backend, "{err}");
    assert_eq!(err.operation(), Some("open"), "{err}");
    assert!(
        err.to_string()
            .contains("panicked in open: the fixture's open panicked on purpose"),
        "{err}"
    );
    // The library still serves other stores.
    PluginCore::load_symbol(support::fixtures(), "cachier_fixture_panicking", "")
        .expect("open after a panicking open");
}

/// How many lying buffers the host gave back to the fixture so far.
fn marked_frees() -> u64 {
    // SAFETY: the fixtures library exports this function with this signature; the library is
    // loaded (and kept) by the PluginCore the test opened first.
    unsafe {
        let library = libloading::Library::new(support::fixtures()).expect("load the fixtures");
        let frees = *library
            .get::<extern "C" fn() -> u64>("cachier_fixture_marked_frees")
            .expect("the fixtures count frees");
        // Keep it loaded, like the host does.
        std::mem::forget(library);
        frees()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn lying_buffers_are_errors_never_reads_or_allocations() {
    let core = PluginCore::load_symbol(support::fixtures(), "cachier_fixture_bad_buffers", "")
        .expect("the bad-buffer fixture loads");
    let frees = marked_frees();

    // (function id, kind, what the message says, marked buffers given back)
    let cases = [
        (
            "huge_value",
            ErrorKind::Corrupt,
            "a value of 1099511627776 bytes, more than the limit of 1073741824 bytes",
            1,
        ),
        (
            "null_value",
            ErrorKind::Corrupt,
            "a value of 1000 bytes at a null pointer",
            0,
        ),
        (
            "huge_message",
            ErrorKind::Backend,
            "an error message of 1099511627776 bytes",
            1,
        ),
        (
            "not_utf8_message",
            ErrorKind::Corrupt,
            "\u{fffd}\u{fffd}x",
            1,
        ),
        (
            "unknown_kind",
            ErrorKind::Backend,
            "0123456789abcdef (unknown error kind code 4242)",
            1,
        ),
        (
            "unknown_status",
            ErrorKind::Corrupt,
            "the plugin returned the unknown status 77",
            0,
        ),
    ];
    let mut expected_frees = frees;
    for (func, kind, says, freed) in cases {
        for read in ["get", "get_value"] {
            let result = match read {
                "get" => core.get(&key(func)).await,
                _ => core.get_value(&key(func)).await,
            };
            let err = result.expect_err(func);
            assert_eq!(err.kind(), kind, "{func}: {err}");
            assert_eq!(err.operation(), Some(read), "{func}: {err}");
            assert!(err.to_string().contains(says), "{func}: {err}");
            expected_frees += freed;
            assert_eq!(
                marked_frees(),
                expected_frees,
                "{func}: the host did not give back exactly the buffers it got"
            );
        }
    }

    for (func, says) in [
        ("bad_token", "a claim token that is not UTF-8"),
        ("huge_token", "a claim token of 1099511627776 bytes"),
    ] {
        let err = core
            .claim(&key(func), Duration::from_secs(5))
            .await
            .expect_err(func);
        assert_eq!(err.kind(), ErrorKind::Corrupt, "{func}: {err}");
        assert!(err.to_string().contains(says), "{func}: {err}");
        expected_frees += 1;
        assert_eq!(marked_frees(), expected_frees, "{func}");
    }

    // Honest calls still work.
    let k = key("honest");
    core.set(&k, vec![1, 2, 3].into(), Timestamp::now())
        .await
        .unwrap();
    assert_eq!(
        core.get(&k).await.unwrap().unwrap().value.as_deref(),
        Some(&[1u8, 2, 3][..])
    );

    // Through the front end a lying read is a miss: the function is computed and returned.
    let cache = Cachier::new(Arc::new(core));
    for func in ["huge_value", "null_value", "unknown_status"] {
        let f = cache.function(FuncId::new(func).unwrap());
        assert_eq!(f.call(&1u8, || async { 9u32 }).await.unwrap(), 9, "{func}");
    }
}
