//! Misuse of `#[cachier]` is a compile error pointing at the offending token, with a message
//! that says what to write instead. Every case is a file in `tests/ui/`, its message pinned in
//! the `.stderr` beside it.
//!
//! The messages of rustc itself (a type that is not `Serialize`, not `Clone`) depend on the
//! toolchain: the files are pinned with the stable toolchain CI uses. After a deliberate change
//! of a message, or a new toolchain, review and re-pin them:
//! `TRYBUILD=overwrite cargo test -p cachier-macros --test compile_fail`.

#[test]
fn misuse_is_a_compile_error_that_says_what_to_write() {
    trybuild::TestCases::new().compile_fail("tests/ui/*.rs");
}
