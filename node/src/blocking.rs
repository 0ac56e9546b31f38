//! Checks run off the async executor: signature and proof checks on
//! tokio's blocking pool, with an answer that tells a failed check from
//! a check that could not run (so that our own failure never reads as a
//! peer's forgery).

/// Runs a check on the blocking pool. `None` when the task failed (a
/// panic of ours, or the runtime shutting down): the verdict is unknown,
/// so the caller drops the message without blaming its sender; a peer is
/// reported only for a check that ran and failed.
pub async fn blocking_check<T: Send + 'static>(
    what: &'static str,
    check: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    match tokio::task::spawn_blocking(check).await {
        Ok(verdict) => Some(verdict),
        Err(e) => {
            tracing::error!(error = %e, what, "a check task failed: message dropped, nobody blamed");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::blocking_check;

    #[tokio::test]
    async fn a_check_that_cannot_run_has_no_verdict() {
        assert_eq!(blocking_check("test", || false).await, Some(false));
        assert_eq!(blocking_check("test", || true).await, Some(true));
        // A panic of ours is no "forged": no verdict, nobody blamed.
        let failed: Option<bool> = blocking_check("test", || panic!("a bug of ours")).await;
        assert_eq!(failed, None);
    }
}
