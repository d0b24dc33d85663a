//! The chat service's integration tests: the real auth and chat servers on loopback ports, each
//! test against its own freshly migrated database.

mod bus_contract;
mod conversations;
mod dashboards;
mod delivery;
mod forwarding;
mod gateway;
mod gateway_statuses;
mod groups;
mod helpers;
mod history;
mod malformed;
mod metrics;
mod nats;
mod nats_bus;
mod nats_faults;
mod properties;
mod revocation;
mod sending;
mod serving;
mod traces;
