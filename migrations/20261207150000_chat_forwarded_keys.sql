-- Forwarded keys: the content key of a past message, re-wrapped by one device of a user for
-- another device of the same user (ForwardKeys), so that a device added later can read history
-- sent before it existed. Opaque to the server like chat.message_keys: an RSA-OAEP ciphertext
-- and the forwarding device's Ed25519 signature (e2ee/src/forwarding.rs).
--
-- Compatible with the running release: a new table and index only; the previous release never
-- reads or writes it (its ListMessages simply does not return forwarded keys).

create table chat.forwarded_keys (
    conversation_id           uuid        not null,
    sequence                  bigint      not null,
    recipient_device_id       uuid        not null,
    forwarder_device_id       uuid        not null,
    user_id                   uuid        not null,
    recipient_key_fingerprint bytea       not null,
    wrapped_key               bytea       not null,
    signature                 bytea       not null,
    created_at                timestamptz not null default now(),

    -- One key per message, recipient and forwarder: a forwarder replaces its own, and another
    -- forwarder's key is kept beside it (a lying forwarder cannot hide an honest one's).
    constraint forwarded_keys_pkey
        primary key (recipient_device_id, conversation_id, sequence, forwarder_device_id),
    constraint forwarded_keys_conversation_id_sequence_fkey foreign key (conversation_id, sequence)
        references chat.messages (conversation_id, sequence) on delete cascade,
    constraint forwarded_keys_recipient_key_fingerprint_check
        check (octet_length(recipient_key_fingerprint) = 32),
    constraint forwarded_keys_wrapped_key_check
        check (octet_length(wrapped_key) between 1 and 512),
    constraint forwarded_keys_signature_check check (octet_length(signature) = 64),
    constraint forwarded_keys_distinct_devices_check
        check (recipient_device_id <> forwarder_device_id)
);

-- Lets the cascade from chat.messages find a message's forwarded keys.
create index forwarded_keys_conversation_id_sequence_idx
    on chat.forwarded_keys (conversation_id, sequence);

comment on table chat.forwarded_keys is
    'Content keys of past messages re-wrapped by one device for another device of the same user (ForwardKeys); opaque: RSA-OAEP ciphertext and the forwarder''s signature, never a usable key.';
comment on column chat.forwarded_keys.user_id is
    'The user both devices belong to (the forwarder''s, checked against auth''s active devices when stored).';
comment on column chat.forwarded_keys.wrapped_key is
    'Content key encrypted with the recipient device''s RSA-OAEP public key by the forwarding device.';
comment on column chat.forwarded_keys.signature is
    'Ed25519 signature of the forwarding device (chat.v1.ForwardedKey documents what it covers).';
