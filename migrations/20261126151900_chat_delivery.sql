-- chat service: what delivery needs beyond the first schema.
--
-- The recipients digest (SHA-256 over the full recipient list, see chat.v1.Envelope) is delivered
-- with every message so that a device holding only its own wrapped key can rebuild the signed
-- header. The server computes it once on send, from the full list it has just checked; storing it
-- saves reading every recipient row on each delivery. No message existed before this migration
-- (SendMessage answered UNIMPLEMENTED), so the temporary default never reaches a real row.

alter table chat.messages
    add column recipients_digest bytea not null default '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea;

alter table chat.messages alter column recipients_digest drop default;

alter table chat.messages
    add constraint messages_recipients_digest_check check (octet_length(recipients_digest) = 32);

comment on column chat.messages.recipients_digest is
    'SHA-256 over the sorted recipient list (device id, key fingerprint), as covered by the signature; delivered as Message.recipients_digest.';

-- "Conversations of this user, most recent activity first": ListConversations sorts direct
-- conversations by updated_at, which every send bumps with last_sequence.
create index conversations_updated_at_id_idx on chat.conversations (updated_at desc, id desc);
