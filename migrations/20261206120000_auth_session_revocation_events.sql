-- auth service: the device_events outbox also records revoked sessions (logout, logout
-- everywhere, refresh-token reuse), so that AuthInternalService.WatchRevocations can stream every
-- revocation (these and device_revoked) to the validators of the gateway, chat and group, which
-- then refuse the session's access tokens within seconds instead of at their expiry.
-- WatchDeviceChanges leaves session_revoked events out: a session says nothing about keys.

alter table auth.device_events add column session_id uuid;

alter table auth.device_events drop constraint device_events_kind_check;
alter table auth.device_events add constraint device_events_kind_check
    check (kind in ('keys_uploaded', 'device_revoked', 'session_revoked'));

-- A session is named exactly by the events about one session.
alter table auth.device_events add constraint device_events_session_id_check
    check ((kind = 'session_revoked') = (session_id is not null));

comment on column auth.device_events.session_id is
    'The revoked session of a session_revoked event; null for the other kinds. No foreign key: events outlive sessions.';
