//! Agent integration tests with real components: Mosquitto (the shared one on 127.0.0.1:1883,
//! or a private one on a free port), the real recognizer with the committed model and sample
//! exports, the agent binary for the crash test. A stand-in for the hub answers receipts.
//! See: #4

mod crash;
mod delivery;
mod outbox_crash;
mod run;
mod util;
