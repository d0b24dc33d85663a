-- group service schema: groups, their members and an outbox of membership
-- events that the chat service consumes.
--
-- The schema is named "groups" because "group" is a reserved word in SQL.
-- User ids are plain uuid columns (owned by the auth service); no foreign key
-- or view crosses schemas. All constraints and indexes are named explicitly
-- because the application matches on the names. updated_at is maintained by
-- the application.

create schema groups;

comment on schema groups is
    'Owned by the group service only. Other services must never read these tables; chat learns about membership from membership_events via the group service.';

-- ---------------------------------------------------------------------------
-- groups
-- ---------------------------------------------------------------------------
create table groups.groups (
    id                 uuid        not null,
    name               text        not null,
    created_by         uuid        not null,
    membership_version bigint      not null default 0,
    created_at         timestamptz not null default now(),
    updated_at         timestamptz not null default now(),

    constraint groups_pkey primary key (id),
    -- 1..64 characters and at least one non-whitespace character.
    constraint groups_name_check check (char_length(name) between 1 and 64 and name ~ '\S'),
    constraint groups_membership_version_check check (membership_version >= 0)
);

comment on table groups.groups is
    'Chat groups. The chat service''s group conversation uses the same id.';
comment on column groups.groups.created_by is
    'User (auth service id) who created the group.';
comment on column groups.groups.membership_version is
    'Bumped on every membership change (in the same transaction), so caches and consumers can tell they are stale. Updating it also row-locks the group, which serialises membership changes per group.';

-- ---------------------------------------------------------------------------
-- members
-- ---------------------------------------------------------------------------
create table groups.members (
    group_id   uuid        not null,
    user_id    uuid        not null,
    role       text        not null,
    added_by   uuid,
    joined_at  timestamptz not null default now(),
    updated_at timestamptz not null default now(),

    constraint members_pkey primary key (group_id, user_id),
    constraint members_group_id_fkey foreign key (group_id)
        references groups.groups (id) on delete cascade,
    constraint members_role_check check (role in ('owner', 'admin', 'member'))
);

-- "Groups of this user".
create index members_user_id_idx on groups.members (user_id);

comment on table groups.members is
    'Current members of each group. Several owners are allowed; the service guarantees at least one remains.';
comment on column groups.members.role is
    'owner: full control; admin: manage members; member: send and read.';
comment on column groups.members.added_by is
    'User who added this member; null for the creator.';

-- ---------------------------------------------------------------------------
-- membership_events
-- ---------------------------------------------------------------------------
create table groups.membership_events (
    id                 bigint      generated always as identity,
    group_id           uuid        not null,
    user_id            uuid,
    kind               text        not null,
    role               text,
    membership_version bigint      not null,
    created_at         timestamptz not null default now(),

    constraint membership_events_pkey primary key (id),
    -- No foreign key to groups: events must outlive the deleted group
    -- (group_deleted is itself an event).
    constraint membership_events_kind_check check (
        kind in ('member_added', 'member_removed', 'role_changed', 'group_renamed', 'group_deleted')
    ),
    constraint membership_events_role_check
        check (role is null or role in ('owner', 'admin', 'member')),
    -- Member events name the member; additions and role changes carry the new role.
    constraint membership_events_shape_check check (
        (kind not in ('member_added', 'member_removed', 'role_changed') or user_id is not null)
        and (kind not in ('member_added', 'role_changed') or role is not null)
    ),
    constraint membership_events_membership_version_check check (membership_version >= 0)
);

create index membership_events_group_id_id_idx on groups.membership_events (group_id, id);

comment on table groups.membership_events is
    'Outbox of membership changes, written in the same transaction as the change and streamed to the chat service, which resumes from the last id it processed. '
    'Caveat: identity values are assigned at insert, not at commit, so concurrent transactions can commit out of id order; a consumer that resumes with "id > last" must either only read ids below the oldest in-flight writer or the writers must serialise event inserts.';
comment on column groups.membership_events.id is
    'Monotonic event id used as the consumer''s resume cursor.';
comment on column groups.membership_events.user_id is
    'Member affected (member_added, member_removed, role_changed); null or the acting user otherwise.';
comment on column groups.membership_events.role is
    'New role for member_added and role_changed; null otherwise.';
comment on column groups.membership_events.membership_version is
    'groups.membership_version after this change, so the consumer can detect missed or duplicate events.';
