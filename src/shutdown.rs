//! Graceful shutdown: one signal that every session can wait on.
//!
//! The trigger closes a channel; every clone of the receiving side then wakes
//! at once, which makes a cheap broadcast without extra crates.

use async_std::channel::{bounded, Receiver, Sender};
use std::sync::{Arc, Mutex};

/// Fires once; every [`ShutdownSignal`] made from it then wakes.
#[derive(Clone)]
pub struct ShutdownTrigger {
    /// Dropped (taken) to close the channel; `None` once fired.
    sender: Arc<Mutex<Option<Sender<()>>>>,
}

/// Waits for the shutdown trigger; cheap to clone, one per session.
#[derive(Clone)]
pub struct ShutdownSignal {
    /// Never receives a value: it only reports closure.
    receiver: Receiver<()>,
}

/// A trigger and the signal it fires.
pub fn channel() -> (ShutdownTrigger, ShutdownSignal) {
    let (tx, rx) = bounded(1);
    (
        ShutdownTrigger {
            sender: Arc::new(Mutex::new(Some(tx))),
        },
        ShutdownSignal { receiver: rx },
    )
}

impl ShutdownTrigger {
    /// Tells every session to wind down; idempotent.
    pub fn fire(&self) {
        if let Ok(mut guard) = self.sender.lock() {
            guard.take();
        }
    }
}

impl ShutdownSignal {
    /// True once shutdown has begun.
    pub fn is_fired(&self) -> bool {
        self.receiver.is_closed()
    }

    /// Resolves when shutdown begins.
    pub async fn wait(&self) {
        let _ = self.receiver.recv().await;
    }
}
