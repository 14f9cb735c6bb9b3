//! Crash injection for the recovery tests: `VSR_FAULT_KILL_AT=<point>` makes the process die
//! on the spot (abort: no destructors, no flush, like `kill -9`) when it reaches that point
//! of a rotation, right after the step was recorded.
//!
//! Compiled only into debug builds (`cfg(debug_assertions)`), which is what `cargo test`
//! runs; in a release build [`point`] is an empty inline function and the variable is never
//! read, so nothing in production can trigger it.

/// Points, in protocol order: `creating`, `created`, `pushing` (each right after that step is
/// recorded), `pushed-unrecorded` (Vercel has the values, the state does not know yet),
/// `pushed`, `notified` (the reminder went out; the record still says `pushed`), `retiring`
/// (the provider retired an old credential; its entry is not yet removed). See
/// `rotation::executor`.
#[cfg(debug_assertions)]
pub fn point(name: &str) {
    if std::env::var("VSR_FAULT_KILL_AT").is_ok_and(|want| want == name) {
        eprintln!("fault injection: dying at {name}");
        std::process::abort();
    }
}

#[cfg(not(debug_assertions))]
#[inline(always)]
pub fn point(_name: &str) {}
