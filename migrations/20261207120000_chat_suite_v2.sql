-- End-to-end encryption suite V2 (issue 19): what the server stores so that recipients can verify
-- V2 envelopes.
--
-- chat.messages gains the chain fields of the signed header (the sending device's counter in the
-- conversation, the hash of its previous envelope, its clock) and the size of the recipients tree;
-- chat.message_keys gains each entry's place in that tree (leaf index and inclusion proof), which
-- the sending check computes once and every delivery to that device carries. V1 rows keep the
-- defaults (0 and empty), which V1 envelopes deliver as their unset fields. Constant defaults:
-- adding the columns rewrites no table.
--
-- chat.commit_messages gets an overload with the new arrays and stores the suite it is given
-- (the old one wrote 1). The old overload stays for replicas of the previous release during a
-- rolling update; it stores V1 rows as before. Planning, locking and retries are those of
-- 20261127140000_chat_commit_generic_plan.sql.
alter table chat.messages
    add column sender_counter bigint not null default 0,
    add column previous_envelope_hash bytea not null default '',
    add column sender_time_ms bigint not null default 0,
    add column recipient_count integer not null default 0,
    add constraint messages_previous_envelope_hash_check
        check (octet_length(previous_envelope_hash) in (0, 32));

alter table chat.message_keys
    add column leaf_index integer not null default 0,
    add column inclusion_proof bytea not null default '';

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
    p_wrapped_keys       bytea[],
    p_suites             smallint[],
    p_sender_counters    bigint[],
    p_previous_hashes    bytea[],
    p_sender_times       bigint[],
    p_recipient_counts   integer[],
    p_key_leaf_indexes   integer[],
    p_key_proofs         bytea[]
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
set plan_cache_mode = force_generic_plan
set enable_seqscan = off
set enable_nestloop = off
set jit = off
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
                    p_signatures, p_recipients_digests, p_suites, p_sender_counters,
                    p_previous_hashes, p_sender_times, p_recipient_counts)
            with ordinality as t(conversation_id, id, sender_user_id, sender_device_id,
                                 client_message_id, nonce, ciphertext, key_commitment,
                                 signature, recipients_digest, suite, sender_counter,
                                 previous_envelope_hash, sender_time_ms, recipient_count,
                                 ordinal)
    ),
    already as (
        select i.ordinal, m.id, m.conversation_id, m.sequence, m.created_at, m.signature
        from input i
        cross join lateral (
            select m.id, m.conversation_id, m.sequence, m.created_at, m.signature
            from chat.messages m
            where m.sender_device_id = i.sender_device_id
              and m.client_message_id = i.client_message_id
            limit 1
        ) m
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
          and c.id = any(p_conversation_ids)
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
            signature, recipients_digest, sender_counter, previous_envelope_hash,
            sender_time_ms, recipient_count)
        select n.conversation_id, n.sequence, n.id, n.sender_user_id, n.sender_device_id,
               n.client_message_id, n.suite, n.nonce, n.ciphertext, n.key_commitment,
               n.signature, n.recipients_digest, n.sender_counter, n.previous_envelope_hash,
               n.sender_time_ms, n.recipient_count
        from numbered n
        returning 1
    ),
    keys as (
        insert into chat.message_keys (conversation_id, sequence, device_id, key_fingerprint,
            wrapped_key, leaf_index, inclusion_proof)
        select n.conversation_id, n.sequence, k.device_id, k.key_fingerprint, k.wrapped_key,
               k.leaf_index, k.inclusion_proof
        from unnest(p_key_ordinals, p_key_device_ids, p_key_fingerprints, p_wrapped_keys,
                    p_key_leaf_indexes, p_key_proofs)
            as k(ordinal, device_id, key_fingerprint, wrapped_key, leaf_index, inclusion_proof)
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
