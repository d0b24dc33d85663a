-- chat.commit_messages plans its statement once per session, with a plan that cannot turn into
-- a scan of a whole table.
--
-- Why: PostgreSQL replanned the function's big statement on almost every call (it kept
-- choosing custom plans), about 0.7 ms of a 1.6 ms single-message commit on the benchmark
-- machine, which an idle sender waits for. A generic plan is made once per session, but from
-- the statistics of that moment: made while chat.messages was small, the retry lookup became a
-- join over a full scan of it, and commits slowed down as the table grew. So every table access
-- here is now bounded by the batch whatever the statistics say:
--
-- - the retry lookup is a LATERAL subquery with LIMIT 1, which the planner neither flattens nor
--   hash-joins: one probe per send of messages_sender_device_id_client_message_id_key;
-- - the conversation rows are reached only through `id = any(p_conversation_ids)`;
-- - enable_seqscan = off, for this function only, leaves an index scan as the only way to
--   read chat.messages and chat.conversations (every statement filters by a unique key);
-- - enable_nestloop = off makes the joins between the batch's own rows (the arrays and the CTEs)
--   hash joins: the planner believes the CTEs hold one row, and nested loops over them would be
--   quadratic in a batch of 512. The retry lookup stays a nested loop, its only possible plan;
-- - jit = off, because that forced nested loop carries the planner's "disabled" cost, which
--   passes jit_above_cost and would compile the statement (2.3 s on the first call).
--
-- A test in chat/src/commit.rs plans the function on tables analysed empty, grows them and
-- counts sequential scans. The locking, retry and sequencing rules are those of
-- 20261127080000_chat_commit_function.sql.
create or replace function chat.commit_messages(
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
                    p_signatures, p_recipients_digests)
            with ordinality as t(conversation_id, id, sender_user_id, sender_device_id,
                                 client_message_id, nonce, ciphertext, key_commitment,
                                 signature, recipients_digest, ordinal)
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
