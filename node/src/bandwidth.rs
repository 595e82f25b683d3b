//! [`Bandwidth`]: a token bucket capping bytes per second in one direction.

use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

/// Caps a byte rate. Callers ask for bytes before moving them and wait when the bucket is
/// empty; a burst of up to one second's worth passes at once.
pub struct Bandwidth {
    rate: u64,
    state: Mutex<Bucket>,
}

struct Bucket {
    tokens: f64,
    refilled: Instant,
}

impl Bandwidth {
    /// A cap of `bytes_per_second`; 0 means unlimited.
    pub fn new(bytes_per_second: u64) -> Self {
        Self {
            rate: bytes_per_second,
            state: Mutex::new(Bucket {
                tokens: bytes_per_second as f64,
                refilled: Instant::now(),
            }),
        }
    }

    /// Whether a cap is set.
    pub fn is_limited(&self) -> bool {
        self.rate > 0
    }

    /// Waits until `bytes` may be moved. Requests larger than the burst are let through
    /// once the bucket has refilled, leaving it in debt, so large shards are not starved.
    pub async fn take(&self, bytes: u64) {
        if self.rate == 0 || bytes == 0 {
            return;
        }
        // The lock is held while sleeping so that waiters are served in turn.
        let mut bucket = self.state.lock().await;
        let rate = self.rate as f64;
        loop {
            let now = Instant::now();
            let elapsed = now.duration_since(bucket.refilled).as_secs_f64();
            bucket.tokens = (bucket.tokens + elapsed * rate).min(rate);
            bucket.refilled = now;
            if bucket.tokens >= (bytes as f64).min(rate) {
                bucket.tokens -= bytes as f64;
                return;
            }
            let missing = (bytes as f64).min(rate) - bucket.tokens;
            tokio::time::sleep(Duration::from_secs_f64(missing / rate)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn rate_is_enforced_over_time() {
        let limit = Bandwidth::new(1000);
        let start = Instant::now();
        // The first second's worth is the burst; the next 3000 bytes take three seconds.
        for _ in 0..40 {
            limit.take(100).await;
        }
        let elapsed = start.elapsed();
        assert!(elapsed >= Duration::from_millis(2990), "{elapsed:?}");
        assert!(elapsed <= Duration::from_millis(3100), "{elapsed:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn unlimited_never_waits() {
        let limit = Bandwidth::new(0);
        let start = Instant::now();
        limit.take(u64::MAX).await;
        assert_eq!(start.elapsed(), Duration::ZERO);
    }
}
