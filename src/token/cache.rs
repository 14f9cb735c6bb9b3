//! Short-lived tokens, cached per installation id: asked for when none is held or the held
//! one is near its end, dropped when Vercel refuses it, and never asked for twice at once.
//!
//! - **Refresh.** A token that came with `expires_in` is asked for again once less than a
//!   tenth of its life or 60 s is left, whichever is larger ([`refresh_margin`]), so a push
//!   never starts with a token about to lapse. One without `expires_in` is kept until Vercel
//!   refuses it.
//! - **One call at a time.** Each installation has its own async lock, held across the call;
//!   pushes that need the token meanwhile wait for the same answer, a failure included (they
//!   do not each run the program again).
//! - **A failed refresh** while the held token has not expired yet keeps that token in use
//!   (logged); the next push asks again.
//! - **Refused.** [`TokenCache::refused`] drops the token a push was refused with, unless a
//!   newer one has replaced it already.
//!
//! Keyed by installation id, not table name, so discovered installations (which have no
//! table) can share it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use secrecy::SecretString;
use tokio::time::Instant;

use super::TokenError;

/// The least time a token must have left to be used for a new push.
const MIN_MARGIN: Duration = Duration::from_secs(60);

/// A token as its source gave it.
pub struct Fresh {
    pub token: SecretString,
    /// How long it is valid from now; `None`: no expiry is known.
    pub expires_in: Option<Duration>,
}

/// Where the cache gets a token for an installation: a token command, or a fake in tests.
#[async_trait]
pub trait TokenFetcher: Send + Sync {
    async fn fetch(&self, installation_id: &str) -> Result<Fresh, TokenError>;
}

/// A token handed out by the cache, with what [`TokenCache::refused`] needs to drop it.
#[derive(Clone)]
pub struct CachedToken {
    pub token: Arc<SecretString>,
    generation: u64,
}

/// How long before a token's end it is asked for again: a tenth of its life, at least 60 s.
pub fn refresh_margin(life: Duration) -> Duration {
    (life / 10).max(MIN_MARGIN)
}

#[derive(Default)]
pub struct TokenCache {
    slots: Mutex<HashMap<String, Arc<Slot>>>,
}

#[derive(Default)]
struct Slot {
    /// Calls of the source finished so far; read before waiting for `state`, so a waiter
    /// can tell a failure that ended while it waited (its answer too) from one that was
    /// there before it came (worth asking again).
    finished: AtomicU64,
    state: tokio::sync::Mutex<State>,
}

#[derive(Default)]
struct State {
    held: Option<Held>,
    /// Counts the tokens this slot has held, so a refusal drops only the one refused.
    generation: u64,
    /// The last call's failure, with its number in `finished`.
    last_failure: Option<(u64, Arc<TokenError>)>,
}

struct Held {
    token: Arc<SecretString>,
    generation: u64,
    /// When to ask again; `None`: only once refused.
    refresh_at: Option<Instant>,
    /// When it stops working, if known.
    expires_at: Option<Instant>,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("TokenCache")
            .field("installations", &slots.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl TokenCache {
    fn slot(&self, installation_id: &str) -> Arc<Slot> {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        slots.entry(installation_id.to_owned()).or_default().clone()
    }

    /// The installation's token: the held one while it is fresh, else a new one from
    /// `fetcher` (one call at a time per installation; see the module doc).
    pub async fn get(
        &self,
        installation_id: &str,
        fetcher: &dyn TokenFetcher,
    ) -> Result<CachedToken, TokenError> {
        let slot = self.slot(installation_id);
        let finished_before = slot.finished.load(Ordering::Acquire);
        let mut state = slot.state.lock().await;
        let now = Instant::now();
        if let Some(held) = &state.held
            && held.refresh_at.is_none_or(|at| now < at)
        {
            return Ok(held.handed_out());
        }
        if let Some((call, error)) = &state.last_failure
            && *call > finished_before
        {
            // The call this push waited for failed: its answer is this push's too.
            return Err(TokenError::Shared(error.clone()));
        }
        let answer = fetcher.fetch(installation_id).await;
        let call = slot.finished.fetch_add(1, Ordering::AcqRel) + 1;
        match answer {
            Ok(fresh) => {
                state.generation += 1;
                let now = Instant::now();
                let held = Held {
                    token: Arc::new(fresh.token),
                    generation: state.generation,
                    refresh_at: fresh
                        .expires_in
                        .map(|life| now + life.saturating_sub(refresh_margin(life))),
                    expires_at: fresh.expires_in.map(|life| now + life),
                };
                let out = held.handed_out();
                state.held = Some(held);
                state.last_failure = None;
                Ok(out)
            }
            Err(error) => {
                let error = Arc::new(error);
                state.last_failure = Some((call, error.clone()));
                if let Some(held) = &state.held
                    && held.expires_at.is_none_or(|at| Instant::now() < at)
                {
                    tracing::warn!(
                        installation_id,
                        error = %error,
                        "could not refresh the installation's token; the current one has not expired yet and stays in use"
                    );
                    return Ok(held.handed_out());
                }
                state.held = None;
                Err(TokenError::Shared(error))
            }
        }
    }

    /// Vercel refused `token`: drops it, unless a newer token has replaced it already, so
    /// the next [`get`](Self::get) asks for a new one.
    pub async fn refused(&self, installation_id: &str, token: &CachedToken) {
        let slot = self.slot(installation_id);
        let mut state = slot.state.lock().await;
        if state
            .held
            .as_ref()
            .is_some_and(|held| held.generation == token.generation)
        {
            state.held = None;
        }
    }
}

impl TokenCache {
    /// Drops an installation's slot (it left the fleet), so 20,000 installations that come
    /// and go leave nothing behind. A call in flight keeps its own handle to the slot.
    pub fn forget(&self, installation_id: &str) {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        slots.remove(installation_id);
    }
}

impl Held {
    fn handed_out(&self) -> CachedToken {
        CachedToken {
            token: self.token.clone(),
            generation: self.generation,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;
    use std::sync::atomic::AtomicUsize;

    /// Answers `tok_1`, `tok_2`, ... with a fixed life, after `delay`; fails while `failing`.
    struct Counter {
        calls: AtomicUsize,
        life: Option<Duration>,
        delay: Duration,
        failing: std::sync::atomic::AtomicBool,
    }

    impl Counter {
        fn new(life: Option<Duration>) -> Arc<Counter> {
            Arc::new(Counter {
                calls: AtomicUsize::new(0),
                life,
                delay: Duration::from_secs(1),
                failing: Default::default(),
            })
        }
        fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }
    }

    #[async_trait]
    impl TokenFetcher for Counter {
        async fn fetch(&self, _installation_id: &str) -> Result<Fresh, TokenError> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            tokio::time::sleep(self.delay).await;
            if self.failing.load(Ordering::SeqCst) {
                return Err(TokenError::Empty {
                    source_name: "the test".into(),
                });
            }
            Ok(Fresh {
                token: SecretString::from(format!("tok_{n}")),
                expires_in: self.life,
            })
        }
    }

    async fn token(cache: &TokenCache, fetcher: &Counter) -> String {
        let t = cache.get("icfg_1", fetcher).await.unwrap();
        t.token.expose_secret().to_owned()
    }

    #[test]
    fn margin_is_a_tenth_of_the_life_but_at_least_a_minute() {
        let s = Duration::from_secs;
        for (life, margin) in [(3600, 360), (600, 60), (300, 60), (30, 60), (86_400, 8640)] {
            assert_eq!(refresh_margin(s(life)), s(margin), "life {life}s");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_hour_token_is_reused_until_six_minutes_before_its_end() {
        let cache = TokenCache::default();
        let fetcher = Counter::new(Some(Duration::from_secs(3600)));
        assert_eq!(token(&cache, &fetcher).await, "tok_1");
        // 3600 - 360 = 3240 s after it came: still fresh one second before.
        tokio::time::advance(Duration::from_secs(3238)).await;
        assert_eq!(token(&cache, &fetcher).await, "tok_1");
        assert_eq!(fetcher.calls(), 1);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(token(&cache, &fetcher).await, "tok_2");
        assert_eq!(fetcher.calls(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_ten_minute_token_is_asked_again_a_minute_before_its_end() {
        let cache = TokenCache::default();
        let fetcher = Counter::new(Some(Duration::from_secs(600)));
        assert_eq!(token(&cache, &fetcher).await, "tok_1");
        tokio::time::advance(Duration::from_secs(538)).await;
        assert_eq!(token(&cache, &fetcher).await, "tok_1");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(token(&cache, &fetcher).await, "tok_2");
    }

    #[tokio::test(start_paused = true)]
    async fn a_token_without_expiry_is_kept_until_refused() {
        let cache = TokenCache::default();
        let fetcher = Counter::new(None);
        let first = cache.get("icfg_1", fetcher.as_ref()).await.unwrap();
        tokio::time::advance(Duration::from_secs(30 * 86_400)).await;
        assert_eq!(token(&cache, &fetcher).await, "tok_1");
        cache.refused("icfg_1", &first).await;
        assert_eq!(token(&cache, &fetcher).await, "tok_2");
        // A refusal of the old token, reported late, does not drop the new one.
        cache.refused("icfg_1", &first).await;
        assert_eq!(token(&cache, &fetcher).await, "tok_2");
        assert_eq!(fetcher.calls(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_pushes_wait_for_one_call() {
        let cache = Arc::new(TokenCache::default());
        let fetcher = Counter::new(Some(Duration::from_secs(3600)));
        let gets: Vec<_> = (0..5)
            .map(|_| {
                let (cache, fetcher) = (cache.clone(), fetcher.clone());
                tokio::spawn(async move { token(&cache, &fetcher).await })
            })
            .collect();
        for got in gets {
            assert_eq!(got.await.unwrap(), "tok_1");
        }
        assert_eq!(fetcher.calls(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_share_a_failure_and_the_next_push_asks_again() {
        let cache = Arc::new(TokenCache::default());
        let fetcher = Counter::new(Some(Duration::from_secs(3600)));
        fetcher.failing.store(true, Ordering::SeqCst);
        let gets: Vec<_> = (0..3)
            .map(|_| {
                let (cache, fetcher) = (cache.clone(), fetcher.clone());
                tokio::spawn(async move { cache.get("icfg_1", fetcher.as_ref()).await.is_err() })
            })
            .collect();
        for failed in gets {
            assert!(failed.await.unwrap());
        }
        assert_eq!(fetcher.calls(), 1);
        fetcher.failing.store(false, Ordering::SeqCst);
        assert_eq!(token(&cache, &fetcher).await, "tok_2");
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_refresh_keeps_a_token_that_has_not_expired() {
        let cache = TokenCache::default();
        let fetcher = Counter::new(Some(Duration::from_secs(3600)));
        assert_eq!(token(&cache, &fetcher).await, "tok_1");
        tokio::time::advance(Duration::from_secs(3300)).await;
        fetcher.failing.store(true, Ordering::SeqCst);
        assert_eq!(token(&cache, &fetcher).await, "tok_1");
        // Past its end it is no use: the failure is the answer.
        tokio::time::advance(Duration::from_secs(300)).await;
        assert!(cache.get("icfg_1", fetcher.as_ref()).await.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn installations_have_their_own_tokens() {
        let cache = TokenCache::default();
        let fetcher = Counter::new(None);
        let a = cache.get("icfg_a", fetcher.as_ref()).await.unwrap();
        let b = cache.get("icfg_b", fetcher.as_ref()).await.unwrap();
        assert_ne!(a.token.expose_secret(), b.token.expose_secret());
        assert_eq!(fetcher.calls(), 2);
    }
}
