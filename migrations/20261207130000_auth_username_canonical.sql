-- Case-insensitive usernames (issue 22, section 6). A username is now kept in two forms:
-- `username`, its display form as registered (NFKC-normalised, case kept: `Bob`), and
-- `username_canonical`, its lowercase form (`bob`), the key for uniqueness and every lookup
-- (Register, Login, LookupUsers, login throttling). The application computes both
-- (auth/src/accounts.rs, `Username::parse`).
--
-- Backfill: every existing username passed users_username_check (`^[a-z0-9_.-]{3,32}$`), so its
-- NFKC + lowercase form is itself: `lower()` is the whole canonicalisation here, and no two
-- existing accounts can collide. Should they ever (a database edited by hand), the migration
-- does not fail: of each colliding set, the row already in canonical form (else the oldest)
-- gets the canonical key; the others keep a null one and stay reachable by their exact username
-- only, as before this migration (accounts.rs, `find_credentials`).
--
-- Compatibility with the previous release during a rollout: its pods insert lowercase usernames
-- without a canonical form, so a trigger fills it in (drop it once no such pod is left); they look
-- users up by exact username, so a user registered as `Bob` by a new pod is found by them only
-- as `Bob` until the rollout ends.

-- Display forms may now hold capitals (users_username_display_check, below, replaces it).
alter table auth.users
    add column username_canonical text,
    drop constraint users_username_check;

with ranked as (
    select id, lower(username) as canonical,
           row_number() over (
               partition by lower(username)
               order by (username = lower(username)) desc, created_at, id
           ) as rank
    from auth.users
)
update auth.users u
set username_canonical = ranked.canonical
from ranked
where ranked.id = u.id and ranked.rank = 1;

-- migration-compat: allow add-constraint: the backfill above made it hold, and the trigger below
-- fills the key for the previous release's inserts; such an insert is refused only for a name a
-- new pod registered in another case, the duplicate this constraint exists to stop.
alter table auth.users
    add constraint users_username_canonical_key unique (username_canonical);

-- The canonical form is the display form lowered, so the two can never disagree (null only for
-- the collision case above).
-- migration-compat: allow add-constraint: looser than users_username_check, which it replaces:
-- every row the previous release writes (lowercase only) passes it.
alter table auth.users
    add constraint users_username_display_check check (username ~ '^[A-Za-z0-9_.-]{3,32}$'),
    add constraint users_username_canonical_check
        check (username_canonical is null or username_canonical = lower(username));

create function auth.users_fill_username_canonical() returns trigger
language plpgsql as $$
begin
    new.username_canonical := lower(new.username);
    return new;
end;
$$;

create trigger users_fill_username_canonical
    before insert on auth.users
    for each row when (new.username_canonical is null)
    execute function auth.users_fill_username_canonical();

comment on column auth.users.username is
    'Login name as registered (display form): 3..32 chars of [A-Za-z0-9_.-] after NFKC normalisation by the application. Unique case-insensitively through username_canonical.';
comment on column auth.users.username_canonical is
    'lower(username): the key of uniqueness and of every lookup by name. Null only for an account that collided with another when this column was backfilled; it is reachable by its exact username only.';
comment on trigger users_fill_username_canonical on auth.users is
    'Fills username_canonical for inserts by the release before 20261207130000, which does not know the column. Drop it once no pod of that release runs.';
comment on column auth.login_throttles.throttle_key is
    'What is counted: ''addr:<address>'' (failures from a client address, IPv6 by /64, across usernames, in a fixed window), ''pair:<address> <username>'' (consecutive failures of a username from an address; growing delays) or ''user:<username>'' (consecutive failures of a username from anywhere; the ceiling). Usernames in canonical form (NFKC, lowercase), known or not, so that `Bob` and `bob` share their counts.';
