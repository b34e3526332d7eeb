//! A person stopping a transfer (Ctrl-C), as the pipelines see it.
//!
//! The binary owns the signal handler and holds a [`CancelTrigger`]; the
//! pipelines hold a [`CancelSignal`] in their options and, when it fires,
//! tell the peer "cancelled" before they stop, so the other user reads why
//! instead of "the connection closed". What is already durable on the
//! receiver stays, as after any interruption, for the next run to resume.

use tokio::sync::watch;

/// Fires the [`CancelSignal`]s made with it.
#[derive(Debug)]
pub struct CancelTrigger(watch::Sender<bool>);

impl CancelTrigger {
    /// Cancel: every signal made with this trigger fires.
    pub fn cancel(&self) {
        let _ = self.0.send(true);
    }
}

/// Resolves when the transfer is cancelled; the default never does.
#[derive(Debug, Clone, Default)]
pub struct CancelSignal(Option<watch::Receiver<bool>>);

impl CancelSignal {
    /// A trigger and the signal it fires.
    pub fn new() -> (CancelTrigger, CancelSignal) {
        let (tx, rx) = watch::channel(false);
        (CancelTrigger(tx), CancelSignal(Some(rx)))
    }

    /// Wait until cancelled (forever, if this signal has no trigger or the
    /// trigger is gone without firing).
    pub async fn cancelled(&self) {
        if let Some(rx) = &self.0 {
            let mut rx = rx.clone();
            if rx.wait_for(|cancelled| *cancelled).await.is_ok() {
                return;
            }
        }
        std::future::pending::<()>().await
    }

    /// Whether it has fired.
    pub fn is_cancelled(&self) -> bool {
        self.0.as_ref().is_some_and(|rx| *rx.borrow())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_signal_fires_once_triggered_and_the_default_never() {
        let (trigger, signal) = CancelSignal::new();
        assert!(!signal.is_cancelled());
        let waiting = tokio::spawn({
            let signal = signal.clone();
            async move { signal.cancelled().await }
        });
        trigger.cancel();
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("fired")
            .unwrap();
        assert!(signal.is_cancelled());
        let never = CancelSignal::default();
        assert!(
            tokio::time::timeout(Duration::from_millis(20), never.cancelled())
                .await
                .is_err()
        );
        // A trigger dropped without firing does not cancel.
        let (trigger, signal) = CancelSignal::new();
        drop(trigger);
        assert!(
            tokio::time::timeout(Duration::from_millis(20), signal.cancelled())
                .await
                .is_err()
        );
    }
}
