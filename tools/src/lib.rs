//! Programs people run beside connecX, and what they share: `devstack` (the whole system on a
//! developer machine, behind `scripts/run-local`), `soak` (the chaos soak) and `mail-sink` (the
//! SMTP server with a web page that devstack starts). The library holds what the programs share
//! and what the tests drive: the soak itself ([`soak`], whose CI variant is
//! `tests/tests/soak.rs`) and the child processes of devstack and the soak ([`process`]).

pub mod process;
pub mod soak;
