//! The shared pace of one endpoint kind: how fast requests to it may start, learned from what
//! Vercel says about its rate limit.
//!
//! Vercel limits each endpoint separately, so the client keeps one [`EndpointLimiter`] per
//! endpoint kind (secrets PUT, resource PATCH), shared by every task that calls it.
//!
//! # Algorithm
//!
//! Callers queue in FIFO order (a fair async mutex) and the head of the queue starts its request
//! at the earliest of:
//!
//! - `paused_until`: set when the server refuses (a 429: until its `Retry-After` / reset time,
//!   else for the caller's backoff delay) or says nothing is left (`X-RateLimit-Remaining: 0`:
//!   until `X-RateLimit-Reset`). One refusal holds back every request to the endpoint, not
//!   just the refused one, so a burst does not keep hammering a closed window.
//! - `last start + interval`: the pacing. Every answer that carries `X-RateLimit-Remaining` (r)
//!   and `X-RateLimit-Reset` (the reset is Δ away) sets `interval = Δ / r`: the requests left
//!   are spread evenly over the time left, so a window is used up just as it resets instead of
//!   in its first second. When r is 0 the endpoint pauses until the reset and the interval
//!   becomes `Δ / X-RateLimit-Limit` (the next window's allowance spread over a window), so the
//!   queue does not rush in the moment the pause ends. Against a token bucket (which refills
//!   continuously) the same rule settles where `Δ / r` equals the refill interval: if requests
//!   go faster, r falls and the interval grows; slower, r rises and it shrinks.
//!
//! An answer without rate-limit headers leaves the pacing as it was; until the first one
//! arrives requests are not paced at all (a server that never sends them is never slowed).
//! Whenever the pacing or the pause changes, the waiting head re-reads it at once (a
//! [`Notify`]), so a shorter interval takes effect immediately and a new pause is honoured even
//! by a caller already asleep. A caller whose turn would come after its deadline is told so at
//! once, with the time its turn would come.
//!
//! Only Tokio's clock is used, so the unit tests below run with paused time.

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::{Instant, sleep_until, timeout_at};

/// Longest pause or interval a header may impose: a garbage or far-future reset must not park
/// the endpoint for years (callers' deadlines end their wait much sooner anyway).
const MAX_WAIT: Duration = Duration::from_secs(24 * 60 * 60);

/// What one answer said about the endpoint's rate limit (`X-RateLimit-*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RateWindow {
    /// `X-RateLimit-Limit`: requests allowed per window, if sent.
    pub(crate) limit: Option<u64>,
    /// `X-RateLimit-Remaining`: requests left in this window.
    pub(crate) remaining: u64,
    /// Time from now until `X-RateLimit-Reset`.
    pub(crate) reset_in: Duration,
}

/// The shared pace of one endpoint kind. See the module doc for the algorithm.
#[derive(Debug, Default)]
pub(crate) struct EndpointLimiter {
    state: Mutex<Pace>,
    /// Callers wait their turn here; Tokio's mutex is fair (FIFO).
    queue: tokio::sync::Mutex<()>,
    /// Woken whenever the pause or the interval changes.
    changed: Notify,
}

#[derive(Debug, Default)]
struct Pace {
    /// No request starts before this.
    paused_until: Option<Instant>,
    /// When the last request started.
    last_start: Option<Instant>,
    /// Least time between two request starts.
    interval: Duration,
}

impl Pace {
    fn ready_at(&self, now: Instant) -> Instant {
        let paced = self.last_start.map(|at| at + self.interval);
        [Some(now), self.paused_until, paced]
            .into_iter()
            .flatten()
            .max()
            .unwrap_or(now)
    }

    fn pause_until(&mut self, until: Instant) {
        if self.paused_until.is_none_or(|p| p < until) {
            self.paused_until = Some(until);
        }
    }
}

impl EndpointLimiter {
    /// Waits for this caller's turn to start a request. `Err(at)` when the turn would come
    /// only after `deadline` (at `at`): the caller should not wait for it.
    pub(crate) async fn acquire(&self, deadline: Instant) -> Result<(), Instant> {
        let Ok(_turn) = timeout_at(deadline, self.queue.lock()).await else {
            return Err(self.ready_at());
        };
        loop {
            // Registered before the state is read, so a change in between is not missed.
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let ready = {
                let mut pace = self.lock();
                let now = Instant::now();
                let ready = pace.ready_at(now);
                if ready <= now {
                    // Count from the slot this start was due at, not from when the timer
                    // fired: a millisecond of timer lateness per start would slow a 200/s
                    // pace to 160/s. A slot more than one interval old is not used, so an idle
                    // endpoint does not bank a burst.
                    let interval = pace.interval;
                    let due = [pace.paused_until, pace.last_start.map(|at| at + interval)]
                        .into_iter()
                        .flatten()
                        .max();
                    let slot = due.filter(|d| *d + interval > now).unwrap_or(now).min(now);
                    pace.last_start = Some(slot);
                    return Ok(());
                }
                ready
            };
            if ready > deadline {
                return Err(ready);
            }
            tokio::select! {
                () = sleep_until(ready) => {}
                () = &mut changed => {}
            }
        }
    }

    /// Learns from one answer: its rate-limit headers (if any), and for a 429 how long the
    /// endpoint should rest (`throttled`: the server's hint, else the caller's backoff).
    pub(crate) fn observe(&self, window: Option<RateWindow>, throttled: Option<Duration>) {
        if window.is_none() && throttled.is_none() {
            return;
        }
        let now = Instant::now();
        {
            let mut pace = self.lock();
            if let Some(w) = window {
                let reset_in = w.reset_in.min(MAX_WAIT);
                if w.remaining == 0 {
                    pace.pause_until(now + reset_in);
                    if let Some(limit) = w.limit.filter(|l| *l > 0) {
                        // `X-RateLimit-Reset` has whole-second resolution, so a window that
                        // ends within the second reads as "now": pace over at least a second,
                        // or the queue would rush in after every pause and be refused again.
                        pace.interval = reset_in.max(MIN_WINDOW) / saturate(limit);
                    }
                } else {
                    pace.interval = reset_in / saturate(w.remaining);
                }
            }
            if let Some(wait) = throttled {
                pace.pause_until(now + wait.min(MAX_WAIT));
            }
        }
        self.changed.notify_waiters();
    }

    /// When the next request could start if nobody else were waiting.
    fn ready_at(&self) -> Instant {
        self.lock().ready_at(Instant::now())
    }

    fn lock(&self) -> MutexGuard<'_, Pace> {
        // The state stays consistent whatever panicked while holding it: plain values only.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The shortest rate-limit window assumed when the server's reset time has passed already.
const MIN_WINDOW: Duration = Duration::from_secs(1);

fn saturate(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    const FAR: Duration = Duration::from_secs(3600);

    fn window(limit: u64, remaining: u64, reset_ms: u64) -> Option<RateWindow> {
        Some(RateWindow {
            limit: Some(limit),
            remaining,
            reset_in: Duration::from_millis(reset_ms),
        })
    }

    /// Starts `n` callers at once and returns when each got its turn, relative to `t0`.
    async fn start_times(limiter: &Arc<EndpointLimiter>, n: usize) -> Vec<Duration> {
        let t0 = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..n {
            let limiter = limiter.clone();
            tasks.push(tokio::spawn(async move {
                limiter.acquire(t0 + FAR).await.expect("in time");
                t0.elapsed()
            }));
            // Spawn order is queue order.
            tokio::task::yield_now().await;
        }
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.expect("task"));
        }
        out
    }

    #[tokio::test(start_paused = true)]
    async fn unpaced_until_the_server_says_something() {
        let limiter = Arc::new(EndpointLimiter::default());
        let times = start_times(&limiter, 50).await;
        assert!(times.iter().all(|t| t.is_zero()), "{times:?}");
        // An answer without headers changes nothing.
        limiter.observe(None, None);
        assert!(start_times(&limiter, 5).await.iter().all(|t| t.is_zero()));
    }

    #[tokio::test(start_paused = true)]
    async fn remaining_requests_are_spread_over_the_time_to_reset() {
        let limiter = Arc::new(EndpointLimiter::default());
        // 10 left, reset in 1 s: one start every 100 ms.
        limiter.observe(window(100, 10, 1_000), None);
        let times = start_times(&limiter, 5).await;
        let want: Vec<Duration> = (0..5).map(|i| Duration::from_millis(100 * i)).collect();
        assert_eq!(times, want);
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_pauses_every_caller_until_the_reset() {
        let limiter = Arc::new(EndpointLimiter::default());
        limiter.observe(None, Some(Duration::from_secs(2)));
        let times = start_times(&limiter, 20).await;
        assert!(
            times.iter().all(|t| *t == Duration::from_secs(2)),
            "{times:?}"
        );
    }

    /// A 429 whose `X-RateLimit-Reset` (whole seconds) has already passed, with only
    /// `Retry-After: 1`: after the pause, the limit is spread over a second instead of the
    /// whole queue rushing in (regression: a bench against a 200/s bucket settled at 10/s).
    #[tokio::test(start_paused = true)]
    async fn a_reset_already_past_paces_the_limit_over_a_second() {
        let limiter = Arc::new(EndpointLimiter::default());
        limiter.observe(window(200, 0, 0), Some(Duration::from_secs(1)));
        let times = start_times(&limiter, 4).await;
        let ms = Duration::from_millis;
        assert_eq!(times, [ms(1_000), ms(1_005), ms(1_010), ms(1_015)]);
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_left_pauses_then_paces_the_next_window() {
        let limiter = Arc::new(EndpointLimiter::default());
        // Window of 4 resets in 2 s: wait 2 s, then one start every 500 ms.
        limiter.observe(window(4, 0, 2_000), None);
        let times = start_times(&limiter, 3).await;
        let ms = Duration::from_millis;
        assert_eq!(times, [ms(2_000), ms(2_500), ms(3_000)]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_that_arrives_while_waiting_is_honoured() {
        let limiter = Arc::new(EndpointLimiter::default());
        limiter.observe(window(100, 1, 100), None); // interval 100 ms
        let t0 = Instant::now();
        limiter.acquire(t0 + FAR).await.expect("first");
        let waiter = {
            let limiter = limiter.clone();
            tokio::spawn(async move {
                limiter.acquire(t0 + FAR).await.expect("second");
                t0.elapsed()
            })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        // Another caller got a 429 meanwhile: everyone waits 5 s.
        limiter.observe(None, Some(Duration::from_secs(5)));
        let started = waiter.await.expect("task");
        assert_eq!(started, Duration::from_millis(5_010));
    }

    #[tokio::test(start_paused = true)]
    async fn a_shorter_interval_wakes_the_waiting_caller() {
        let limiter = Arc::new(EndpointLimiter::default());
        limiter.observe(window(10, 1, 10_000), None); // interval 10 s
        let t0 = Instant::now();
        limiter.acquire(t0 + FAR).await.expect("first");
        let waiter = {
            let limiter = limiter.clone();
            tokio::spawn(async move {
                limiter.acquire(t0 + FAR).await.expect("second");
                t0.elapsed()
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        limiter.observe(window(10, 9, 900), None); // interval 100 ms
        assert_eq!(waiter.await.expect("task"), Duration::from_millis(100));
    }

    #[tokio::test(start_paused = true)]
    async fn a_turn_past_the_deadline_is_refused_at_once() {
        let limiter = EndpointLimiter::default();
        limiter.observe(None, Some(Duration::from_secs(60)));
        let t0 = Instant::now();
        let at = limiter
            .acquire(t0 + Duration::from_secs(10))
            .await
            .expect_err("past the deadline");
        assert_eq!(at - t0, Duration::from_secs(60));
        assert_eq!(t0.elapsed(), Duration::ZERO, "no waiting for nothing");
        // A garbage reset years away is capped.
        limiter.observe(
            Some(RateWindow {
                limit: None,
                remaining: 0,
                reset_in: Duration::from_secs(u64::MAX / 4),
            }),
            Some(Duration::from_secs(u64::MAX)),
        );
        let at = limiter
            .acquire(t0 + FAR)
            .await
            .expect_err("capped, still far");
        assert_eq!(at - t0, MAX_WAIT);
    }

    /// 200 callers, 64 at a time, against a token bucket simulated here (20/s, capacity 20,
    /// headers as the fake sends them): after the first refusals the pace settles near the
    /// bucket's rate with few further refusals.
    #[tokio::test(start_paused = true)]
    async fn settles_at_a_token_buckets_rate() {
        let limiter = Arc::new(EndpointLimiter::default());
        let bucket = Arc::new(Mutex::new((20.0_f64, Instant::now())));
        let t0 = Instant::now();
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let refused = Arc::new(Mutex::new(0usize));
        // 64 in flight at most, as with `max-concurrent-requests = 64`.
        let in_flight = Arc::new(tokio::sync::Semaphore::new(64));
        let mut tasks = Vec::new();
        for _ in 0..200 {
            let (limiter, bucket, accepted, refused, in_flight) = (
                limiter.clone(),
                bucket.clone(),
                accepted.clone(),
                refused.clone(),
                in_flight.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let _permit = in_flight.acquire_owned().await.expect("permit");
                loop {
                    limiter.acquire(t0 + FAR).await.expect("in time");
                    tokio::time::sleep(Duration::from_millis(2)).await; // round trip
                    let (ok, remaining, full_in) = {
                        let mut b = bucket.lock().expect("bucket");
                        let now = Instant::now();
                        b.0 = (b.0 + (now - b.1).as_secs_f64() * 20.0).min(20.0);
                        b.1 = now;
                        let ok = b.0 >= 1.0;
                        if ok {
                            b.0 -= 1.0;
                        }
                        (ok, b.0.floor() as u64, (20.0 - b.0) / 20.0)
                    };
                    let w = Some(RateWindow {
                        limit: Some(20),
                        remaining,
                        reset_in: Duration::from_secs_f64(full_in),
                    });
                    if ok {
                        limiter.observe(w, None);
                        accepted.lock().expect("accepted").push(t0.elapsed());
                        return;
                    }
                    *refused.lock().expect("refused") += 1;
                    limiter.observe(w, Some(Duration::from_secs(1)));
                }
            }));
        }
        for t in tasks {
            t.await.expect("task");
        }
        let accepted = accepted.lock().expect("accepted").clone();
        let refused = *refused.lock().expect("refused");
        let span = accepted.iter().max().copied().unwrap_or_default();
        let rate = (accepted.len() - 1) as f64 / span.as_secs_f64();
        assert_eq!(accepted.len(), 200);
        // The first burst of 64 meets a bucket of 20: 44 refusals are unavoidable.
        assert!(refused < 60, "{refused} refused");
        assert!((16.0..=21.0).contains(&rate), "{rate}/s over {span:?}");
    }
}
