//! Who takes part and with which devices, as the group service and auth say: `groups.rs`
//! (group membership and its cache) and `devices.rs` (users' active devices and their cache),
//! both `followed_cache.rs` caches, kept right by the event streams `watch.rs` follows
//! (`group_events.rs`, `device_events.rs`), which also tell open streams about changes.

pub(crate) mod device_events;
pub(crate) mod devices;
pub(crate) mod followed_cache;
pub(crate) mod group_events;
pub(crate) mod groups;
pub(crate) mod watch;
