-- chat service schema: conversations, end-to-end encrypted messages, per-device
-- wrapped content keys and per-device read/delivery cursors.
--
-- The server only ever stores ciphertext, wrapped keys and signatures; no
-- plaintext message content is stored anywhere in this schema.
-- User, device and group ids are plain uuid columns: they belong to the auth and
-- group services, and no foreign key or view crosses schemas.
-- All constraints and indexes are named explicitly because the application
-- matches on the names. updated_at is maintained by the application.

create schema chat;

comment on schema chat is
    'Owned by the chat service only. Other services must never read these tables.';

-- ---------------------------------------------------------------------------
-- conversations
-- ---------------------------------------------------------------------------
create table chat.conversations (
    id               uuid        not null,
    kind             text        not null,
    group_id         uuid,
    direct_user_low  uuid,
    direct_user_high uuid,
    last_sequence    bigint      not null default 0,
    created_at       timestamptz not null default now(),
    updated_at       timestamptz not null default now(),

    constraint conversations_pkey primary key (id),
    constraint conversations_group_id_key unique (group_id),
    -- A pair of users has exactly one direct conversation. (Rows with nulls,
    -- i.e. group rows, never conflict.)
    constraint conversations_direct_users_key unique (direct_user_low, direct_user_high),
    constraint conversations_kind_check check (kind in ('direct', 'group')),
    constraint conversations_shape_check check (
        (kind = 'direct'
            and group_id is null
            and direct_user_low is not null
            and direct_user_high is not null)
        or
        (kind = 'group'
            and group_id is not null
            and direct_user_low is null
            and direct_user_high is null)
    ),
    -- The group conversation's id is the group id, so either id can be used.
    constraint conversations_group_id_check check (group_id is null or id = group_id),
    -- Sorted pair (uuid comparison is bytewise, same as Rust's Uuid Ord); strict
    -- so a user cannot have a direct conversation with themself.
    constraint conversations_direct_users_check check (direct_user_low < direct_user_high),
    constraint conversations_last_sequence_check check (last_sequence >= 0)
);

comment on table chat.conversations is
    'A message stream: either a direct conversation between two users or the conversation of a group.';
comment on column chat.conversations.kind is
    '''direct'' (two users, participants in conversation_participants) or ''group'' (membership owned by the group service).';
comment on column chat.conversations.group_id is
    'For kind = group: the group (in the group service) this conversation belongs to; equal to id.';
comment on column chat.conversations.direct_user_low is
    'For kind = direct: the smaller of the two participant user ids.';
comment on column chat.conversations.direct_user_high is
    'For kind = direct: the larger of the two participant user ids.';
comment on column chat.conversations.last_sequence is
    'Highest sequence assigned in this conversation. A send runs "update ... set last_sequence = last_sequence + n ... returning" in the same transaction as the message insert; the row lock serialises senders, so sequences are gap-free and in commit order.';

-- ---------------------------------------------------------------------------
-- conversation_participants
-- ---------------------------------------------------------------------------
create table chat.conversation_participants (
    conversation_id uuid        not null,
    user_id         uuid        not null,
    joined_at       timestamptz not null default now(),

    constraint conversation_participants_pkey primary key (conversation_id, user_id),
    constraint conversation_participants_conversation_id_fkey foreign key (conversation_id)
        references chat.conversations (id) on delete cascade
);

-- "Conversations of this user".
create index conversation_participants_user_id_idx on chat.conversation_participants (user_id);

comment on table chat.conversation_participants is
    'Participants of direct conversations. Group membership is owned by the group service and not stored here.';

-- ---------------------------------------------------------------------------
-- messages
-- ---------------------------------------------------------------------------
create table chat.messages (
    conversation_id   uuid        not null,
    sequence          bigint      not null,
    id                uuid        not null,
    sender_user_id    uuid        not null,
    sender_device_id  uuid        not null,
    client_message_id text        not null,
    suite             smallint    not null,
    nonce             bytea       not null,
    ciphertext        bytea       not null,
    key_commitment    bytea       not null,
    signature         bytea       not null,
    created_at        timestamptz not null default now(),

    -- Serves history paging in both directions within a conversation.
    constraint messages_pkey primary key (conversation_id, sequence),
    constraint messages_id_key unique (id),
    -- Idempotent retries: resending the same client_message_id from the same
    -- device hits this constraint and the server returns the existing message.
    constraint messages_sender_device_id_client_message_id_key
        unique (sender_device_id, client_message_id),
    constraint messages_conversation_id_fkey foreign key (conversation_id)
        references chat.conversations (id) on delete cascade,
    constraint messages_sequence_check check (sequence > 0),
    constraint messages_client_message_id_check
        check (char_length(client_message_id) between 1 and 64),
    constraint messages_nonce_check check (octet_length(nonce) = 12),
    constraint messages_key_commitment_check check (octet_length(key_commitment) = 32),
    constraint messages_signature_check check (octet_length(signature) = 64)
);

comment on table chat.messages is
    'End-to-end encrypted messages. Only ciphertext, nonce, key commitment and signature are stored; never plaintext. Rows are immutable.';
comment on column chat.messages.sequence is
    'Position in the conversation, 1-based and gap-free (taken from conversations.last_sequence).';
comment on column chat.messages.id is
    'Global message id (UUIDv7), referenced by clients independently of the conversation.';
comment on column chat.messages.sender_device_id is
    'Device (auth service) that sent and signed the message; its signing key verifies signature.';
comment on column chat.messages.client_message_id is
    'Id chosen by the sending client, 1..64 chars, used to deduplicate retries.';
comment on column chat.messages.suite is
    'Cipher suite identifier, tells clients how to interpret nonce, ciphertext, keys and signature.';
comment on column chat.messages.nonce is
    'AEAD nonce, 12 bytes.';
comment on column chat.messages.ciphertext is
    'AEAD ciphertext including the authentication tag.';
comment on column chat.messages.key_commitment is
    'Commitment to the content key (32 bytes) so a sender cannot make different recipients decrypt different plaintexts.';
comment on column chat.messages.signature is
    'Ed25519 signature (64 bytes) by the sender device over the message.';

-- ---------------------------------------------------------------------------
-- message_keys
-- ---------------------------------------------------------------------------
create table chat.message_keys (
    conversation_id uuid  not null,
    sequence        bigint not null,
    device_id       uuid  not null,
    key_fingerprint bytea not null,
    wrapped_key     bytea not null,

    constraint message_keys_pkey primary key (conversation_id, sequence, device_id),
    constraint message_keys_conversation_id_sequence_fkey foreign key (conversation_id, sequence)
        references chat.messages (conversation_id, sequence) on delete cascade,
    constraint message_keys_key_fingerprint_check check (octet_length(key_fingerprint) = 32),
    constraint message_keys_wrapped_key_check check (octet_length(wrapped_key) > 0)
);

-- History as seen by one device: only messages that have a key for it.
create index message_keys_device_id_conversation_id_sequence_idx
    on chat.message_keys (device_id, conversation_id, sequence);

comment on table chat.message_keys is
    'The message content key wrapped for each recipient device (one row per message and device).';
comment on column chat.message_keys.device_id is
    'Recipient device (auth service id).';
comment on column chat.message_keys.key_fingerprint is
    'SHA-256 fingerprint (32 bytes) of the device encryption key used to wrap, so the device knows which private key to use after a key change.';
comment on column chat.message_keys.wrapped_key is
    'Content key encrypted with the device''s RSA-OAEP public key.';

-- ---------------------------------------------------------------------------
-- device_positions
-- ---------------------------------------------------------------------------
create table chat.device_positions (
    device_id          uuid        not null,
    conversation_id    uuid        not null,
    user_id            uuid        not null,
    delivered_sequence bigint      not null default 0,
    read_sequence      bigint      not null default 0,
    updated_at         timestamptz not null default now(),

    constraint device_positions_pkey primary key (device_id, conversation_id),
    constraint device_positions_conversation_id_fkey foreign key (conversation_id)
        references chat.conversations (id) on delete cascade,
    -- read_sequence may exceed delivered_sequence: the read receipt can arrive
    -- before the delivery acknowledgement, so no ordering check between them.
    constraint device_positions_delivered_sequence_check check (delivered_sequence >= 0),
    constraint device_positions_read_sequence_check check (read_sequence >= 0)
);

-- Unread counts per user and conversation.
create index device_positions_user_id_conversation_id_idx
    on chat.device_positions (user_id, conversation_id);
-- Lets the cascade from conversations find rows without scanning the table.
create index device_positions_conversation_id_idx on chat.device_positions (conversation_id);

comment on table chat.device_positions is
    'Per-device cursors in each conversation (0 = nothing delivered/read yet). Updated with greatest() so they never move backwards.';
comment on column chat.device_positions.user_id is
    'Owner of the device, denormalised so unread counts can be computed per user.';
comment on column chat.device_positions.delivered_sequence is
    'Highest sequence the device has acknowledged receiving.';
comment on column chat.device_positions.read_sequence is
    'Highest sequence the device has marked read.';
