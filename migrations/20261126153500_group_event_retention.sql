-- group service: how far membership events have been pruned, so that
-- WatchMembershipEvents can tell a consumer whose cursor points into deleted
-- history (OUT_OF_RANGE) from one that is merely up to date. Event ids can have
-- gaps (an identity value is spent by a rolled-back insert), so "the oldest
-- kept id" cannot tell the two apart.

create table groups.membership_event_retention (
    singleton        boolean     not null default true,
    pruned_through   bigint      not null default 0,
    updated_at       timestamptz not null default now(),

    constraint membership_event_retention_pkey primary key (singleton),
    constraint membership_event_retention_singleton_check check (singleton),
    constraint membership_event_retention_pruned_through_check check (pruned_through >= 0)
);

insert into groups.membership_event_retention (singleton) values (true);

comment on table groups.membership_event_retention is
    'One row: every membership event with id <= pruned_through has been deleted. A consumer resuming after an id below it has missed events and must drop its cache.';
