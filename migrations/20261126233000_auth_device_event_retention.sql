-- auth service: how far device events have been pruned, so that
-- WatchDeviceChanges can tell a consumer whose cursor points into deleted
-- history (OUT_OF_RANGE) from one that is merely up to date (ids can have
-- gaps). The same shape as groups.membership_event_retention: both outboxes
-- are streamed by common::outbox.

create table auth.device_event_retention (
    singleton        boolean     not null default true,
    pruned_through   bigint      not null default 0,
    updated_at       timestamptz not null default now(),

    constraint device_event_retention_pkey primary key (singleton),
    constraint device_event_retention_singleton_check check (singleton),
    constraint device_event_retention_pruned_through_check check (pruned_through >= 0)
);

insert into auth.device_event_retention (singleton) values (true);

comment on table auth.device_event_retention is
    'One row: every device event with id <= pruned_through has been deleted. A consumer resuming after an id below it has missed events and must drop its cache.';

-- The insert time, which follows id order (inserts are serialised), rather than
-- the transaction's start: retention is by it.
alter table auth.device_events alter column created_at set default clock_timestamp();
