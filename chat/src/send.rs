//! The send path, up to durable: `checks.rs` checks a send (envelope, participation, the
//! recipient set against the participants' devices, the signature) and hands it to
//! `commit.rs`, which commits many sends in one transaction, assigns their sequences and feeds
//! the delivery side (the recent tail, then the bus).

pub(crate) mod checks;
pub(crate) mod commit;
