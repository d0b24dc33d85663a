-- Login throttling per (username, address) pair with growing delays, a per-address window and a
-- per-account ceiling of consecutive failures (auth/src/throttle.rs). A pair that logged in
-- successfully is remembered for a while: at the account's ceiling only such addresses may still
-- try freely, so a distributed attacker cannot lock the owner out of their usual addresses.

alter table auth.login_throttles add column last_success_at timestamptz;

comment on table auth.login_throttles is
    'Login attempt counters shared by all auth replicas (in-memory counters would be per replica and reset on restart). An attempt counts as a failure from the moment it is admitted until its password verifies, so parallel attempts cannot slip past a limit. Rows not updated for 30 days are deleted.';
comment on column auth.login_throttles.throttle_key is
    'What is counted: ''addr:<address>'' (failures from a client address, IPv6 by /64, across usernames, in a fixed window), ''pair:<address> <username>'' (consecutive failures of a username from an address; growing delays) or ''user:<username>'' (consecutive failures of a username from anywhere; the ceiling). Usernames as typed, known or not.';
comment on column auth.login_throttles.failures is
    'Failures counted: since window_started_at for addresses; consecutive (reset by a successful login) for pairs and usernames.';
comment on column auth.login_throttles.window_started_at is
    'Start of the current window of an address key; unused for the other keys.';
comment on column auth.login_throttles.blocked_until is
    'A pair: no attempt until then (the growing delay). A username at its ceiling: no attempt from an address without a recent success until then. Unused for addresses.';
comment on column auth.login_throttles.last_success_at is
    'Pairs only: the last successful login of the username from the address (such an address is still let through at the username''s ceiling).';
