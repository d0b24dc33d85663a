-- chat.commit_messages: one send batch of chat/src/commit.rs in one round trip.
--
-- The committer used to run BEGIN, lock, look up retries, bump sequences, insert messages,
-- insert keys and COMMIT as seven round trips; on a small machine each one is a wake-up of the
-- backend and of the committer, and together they were most of an idle sender's ack. Called as
-- one statement in autocommit, this does the same in one transaction and one round trip, with
-- the same rules:
--
-- - the batch's conversations are locked in id order, so two replicas cannot deadlock;
-- - the second statement takes a new snapshot, so it sees every send committed before the
--   locks were granted: a retry of a stored message is answered with the original (`stored`),
--   never stored twice; a retry racing it from another replica fails on
--   messages_sender_device_id_client_message_id_key, and the committer retries one by one;
-- - each conversation's last_sequence is bumped by its number of new messages under the row
--   lock, and the new messages take the sequences below it in batch order: gap-free in commit
--   order.
--
-- The caller passes each (sender device, client message id) at most once; keys refer to their
-- message by its 1-based position in the arrays (`p_key_ordinals`). PL/pgSQL rather than SQL so
-- that each session plans the statements once.
create function chat.commit_messages(
    p_conversation_ids   uuid[],
    p_ids                uuid[],
    p_sender_user_ids    uuid[],
    p_sender_device_ids  uuid[],
    p_client_message_ids text[],
    p_nonces             bytea[],
    p_ciphertexts        bytea[],
    p_key_commitments    bytea[],
    p_signatures         bytea[],
    p_recipients_digests bytea[],
    p_key_ordinals       bigint[],
    p_key_device_ids     uuid[],
    p_key_fingerprints   bytea[],
    p_wrapped_keys       bytea[]
)
returns table (
    ordinal         bigint,
    id              uuid,
    conversation_id uuid,
    sequence        bigint,
    created_at      timestamptz,
    signature       bytea,
    stored          boolean
)
language plpgsql
volatile
as $$
#variable_conflict use_column
begin
    perform 1 from chat.conversations c
    where c.id = any(p_conversation_ids)
    order by c.id
    for update;

    return query
    with input as (
        select *
        from unnest(p_conversation_ids, p_ids, p_sender_user_ids, p_sender_device_ids,
                    p_client_message_ids, p_nonces, p_ciphertexts, p_key_commitments,
                    p_signatures, p_recipients_digests)
            with ordinality as t(conversation_id, id, sender_user_id, sender_device_id,
                                 client_message_id, nonce, ciphertext, key_commitment,
                                 signature, recipients_digest, ordinal)
    ),
    already as (
        select i.ordinal, m.id, m.conversation_id, m.sequence, m.created_at, m.signature
        from input i
        join chat.messages m
          on m.sender_device_id = i.sender_device_id
         and m.client_message_id = i.client_message_id
    ),
    fresh as (
        select i.*,
               row_number() over (partition by i.conversation_id order by i.ordinal) as rank,
               count(*) over (partition by i.conversation_id) as amount
        from input i
        where not exists (select 1 from already a where a.ordinal = i.ordinal)
    ),
    bumped as (
        update chat.conversations c
        set last_sequence = c.last_sequence + n.amount, updated_at = now()
        from (select distinct f.conversation_id, f.amount from fresh f) n
        where c.id = n.conversation_id
        returning c.id, c.last_sequence, n.amount
    ),
    numbered as (
        select f.*, b.last_sequence - b.amount + f.rank as sequence
        from fresh f
        join bumped b on b.id = f.conversation_id
    ),
    inserted as (
        insert into chat.messages (conversation_id, sequence, id, sender_user_id,
            sender_device_id, client_message_id, suite, nonce, ciphertext, key_commitment,
            signature, recipients_digest)
        select n.conversation_id, n.sequence, n.id, n.sender_user_id, n.sender_device_id,
               n.client_message_id, 1, n.nonce, n.ciphertext, n.key_commitment, n.signature,
               n.recipients_digest
        from numbered n
        returning 1
    ),
    keys as (
        insert into chat.message_keys (conversation_id, sequence, device_id, key_fingerprint,
            wrapped_key)
        select n.conversation_id, n.sequence, k.device_id, k.key_fingerprint, k.wrapped_key
        from unnest(p_key_ordinals, p_key_device_ids, p_key_fingerprints, p_wrapped_keys)
            as k(ordinal, device_id, key_fingerprint, wrapped_key)
        join numbered n on n.ordinal = k.ordinal
        returning 1
    )
    select n.ordinal, n.id, n.conversation_id, n.sequence, now(), n.signature, false
    from numbered n
    union all
    select a.ordinal, a.id, a.conversation_id, a.sequence, a.created_at, a.signature, true
    from already a;
end
$$;

comment on function chat.commit_messages is
    'One send batch of the chat committer in one round trip: locks, retries answered with the original, gap-free sequences, messages and keys (see the migration''s header).';
